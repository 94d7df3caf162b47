#!/usr/bin/env bash
# Restore the committed backup into a fresh, throwaway database and verify it: proves that the
# file in this commit restores (every record valid, counts right, embeddings regenerated) before
# it is merged.
#
# Environment: GOLDSET_BACKUP (default data/golden_dataset_backup.json), GOLDSET_EMBEDDER
# (default hash: the check is about the data, not the model).
set -euo pipefail
backup=${GOLDSET_BACKUP:-data/golden_dataset_backup.json}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export DATABASE_URL="sqlite:$scratch/golden.db"
goldset verify --file-only --file "$backup"
goldset restore --replace --file "$backup"
goldset verify --file "$backup"
