#!/usr/bin/env bash
# Restore the committed backup into a fresh, throwaway database and verify it: proves that the
# file in this commit restores (every record valid, counts right, embeddings regenerated) before
# it is merged.
#
# Environment: GOLDSET_BACKUP (default data/golden_dataset_backup.json), GOLDSET_EMBEDDER
# (default hash: the check is about the data, not the model), GOLDSET_CHECK_DB (an SQLite file
# to restore into and keep, for later steps such as `goldset eval --check`; it must not exist
# yet; default a temporary one removed on exit).
set -euo pipefail
backup=${GOLDSET_BACKUP:-data/golden_dataset_backup.json}
if [ -n "${GOLDSET_CHECK_DB:-}" ]; then
    [ ! -e "$GOLDSET_CHECK_DB" ] || {
        echo "verify-committed-backup: $GOLDSET_CHECK_DB exists; the check needs a fresh database" >&2
        exit 2
    }
    db=$GOLDSET_CHECK_DB
else
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    db=$scratch/golden.db
fi
export DATABASE_URL="sqlite:$db"
goldset verify --file-only --file "$backup"
goldset restore --replace --file "$backup"
goldset verify --file "$backup"
# Did retrieval get worse? With golden queries and a saved baseline committed beside the backup
# (`goldset eval --save`), score them on the restored dataset and fail on a drop. Use the
# embedder the baseline was saved with (GOLDSET_EMBEDDER), or the check compares two models.
if [ -f data/golden_queries.json ] && [ -f data/golden_eval.json ]; then
    goldset eval --check
fi
