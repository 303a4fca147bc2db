#!/bin/sh
# The image's entry point: `serve` (the default) first applies pending database migrations, so a new
# release started on an old volume upgrades its schema before it answers; other commands run as given
# (`index /import`, `backup /backups/today`, `stats`, ...).
set -e
if [ "$#" -eq 0 ]; then
  set -- serve
fi
if [ "$1" = serve ]; then
  cbir db upgrade
fi
exec cbir "$@"
