"""Reports: read models from storage and their json/csv/md/html renderers."""
