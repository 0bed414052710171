# Lineage helpers for the integration tests. Source it.
generation_hashes() {  # RUN_DIR: the chain, one line per generation
  for f in "$1"/gen-??????.h5; do
    h5dump -a /generation_hash "$f" 2>/dev/null | grep -o '"[0-9a-f]\{64\}"' || echo "unreadable $f"
  done
}
