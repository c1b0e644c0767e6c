#!/bin/sh
# PostgreSQL backup (CronJob postgres-backup, in the postgis image, so pg_dump matches the
# server's major version): one custom-format dump of database ots into $BACKUP_DIR, named by
# its UTC time, written under a .partial name and renamed when complete; then dumps older than
# $BACKUP_KEEP_DAYS days, and leftover .partial files, are deleted. The newest dump is never
# deleted, whatever its age.
#
# The password comes from the Secret file $PGPASSWORD_FILE: it goes into a pgpass file in a
# private memory-backed folder ($PGPASS_DIR), never onto a command line or into the environment.
# Restore: deploy/README.md, "Backups".
set -eu
: "${BACKUP_DIR:?}" "${BACKUP_KEEP_DAYS:?}" "${PGPASSWORD_FILE:?}" "${PGPASS_DIR:?}"
: "${PGHOST:?}" "${PGDATABASE:?}" "${PGUSER:?}"
umask 077
# pgpass: host:port:database:user:password, with \ and : escaped.
printf '%s:%s:%s:%s:' "$PGHOST" "${PGPORT:-5432}" "$PGDATABASE" "$PGUSER" > "$PGPASS_DIR/pgpass"
sed 's/[\\:]/\\&/g' < "$PGPASSWORD_FILE" | head -n 1 >> "$PGPASS_DIR/pgpass"
export PGPASSFILE="$PGPASS_DIR/pgpass"

name="ots-$(date -u +%Y%m%dT%H%M%SZ).dump"
pg_dump --format=custom --no-password --file="$BACKUP_DIR/$name.partial"
mv "$BACKUP_DIR/$name.partial" "$BACKUP_DIR/$name"
echo "postgres-backup: $name, $(wc -c < "$BACKUP_DIR/$name") bytes"

find "$BACKUP_DIR" -maxdepth 1 -name 'ots-*.dump.partial' -type f -delete
find "$BACKUP_DIR" -maxdepth 1 -name 'ots-*.dump' -type f -mtime "+$BACKUP_KEEP_DAYS" ! -name "$name" \
  -print -delete | sed 's/^/postgres-backup: deleted (older than retention) /'
echo "postgres-backup: kept $(find "$BACKUP_DIR" -maxdepth 1 -name 'ots-*.dump' -type f | wc -l) dumps"
