#!/usr/bin/env bash
# Download and extract DeepMind's few-shot evaluation sets released with Frozen
# (Tsimpoukelli et al., 2021): open_ended_mi, real_name_mi, fast_vqa, guided_vqa (~15 GB in all).
#
#   scripts/download_fewshot.sh [DEST] [TASK ...]     # default DEST=data/fewshot, all four tasks
#
# Each archive lands in DEST/TASK/ (the json files and jpgs directly inside), which is the layout
# frozen.eval.episodes.load_deepmind_task(DEST, TASK, ways=..., shots=...) reads.
# Resumable: a partial download (DEST/TASK.tar.gz.part) is continued, a finished archive is not
# fetched again, and a task whose folder holds the .extracted stamp is skipped.
# The URLs are those linked from https://fh295.github.io/frozen.html (the bucket's README.md there
# describes the files); override the bucket with FEWSHOT_BASE_URL=... if it moves.
set -euo pipefail

BASE_URL="${FEWSHOT_BASE_URL:-https://storage.googleapis.com/dm-few-shot-learning-benchmarks}"
DEST="${1:-data/fewshot}"
shift $(( $# > 0 ? 1 : 0 ))
TASKS=("$@")
[[ ${#TASKS[@]} -gt 0 ]] || TASKS=(open_ended_mi real_name_mi fast_vqa guided_vqa)

fetch() {  # fetch URL OUT: resumable download to OUT.part, renamed to OUT when complete
    local url=$1 out=$2
    if command -v curl >/dev/null; then
        curl -fL --retry 5 -C - -o "$out.part" "$url"
    elif command -v wget >/dev/null; then
        wget -c --tries=5 -O "$out.part" "$url"
    else
        echo "error: neither curl nor wget is installed" >&2
        return 1
    fi
    mv "$out.part" "$out"
}

mkdir -p "$DEST"
for task in "${TASKS[@]}"; do
    case "$task" in
        open_ended_mi | real_name_mi | fast_vqa | guided_vqa) ;;
        *) echo "error: unknown task '$task' (open_ended_mi, real_name_mi, fast_vqa, guided_vqa)" >&2; exit 2 ;;
    esac
    folder="$DEST/$task"
    archive="$DEST/$task.tar.gz"
    if [[ -f "$folder/.extracted" ]]; then
        echo "$task: already extracted in $folder"
        continue
    fi
    if [[ ! -f "$archive" ]]; then
        echo "$task: downloading $BASE_URL/$task.tar.gz"
        if ! fetch "$BASE_URL/$task.tar.gz" "$archive"; then
            echo "error: could not download $BASE_URL/$task.tar.gz; rerun to resume, or find the current" \
                 "links on https://fh295.github.io/frozen.html and set FEWSHOT_BASE_URL" >&2
            exit 1
        fi
    fi
    echo "$task: extracting $archive"
    # Extract into a scratch folder first, so an interrupted extraction never looks finished.
    scratch="$DEST/.$task.extracting"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    tar -xzf "$archive" -C "$scratch"
    rm -rf "$folder"
    # The archives may hold a top-level TASK/ folder or the files themselves; keep one level.
    if [[ -d "$scratch/$task" && $(find "$scratch" -mindepth 1 -maxdepth 1 | wc -l) -eq 1 ]]; then
        mv "$scratch/$task" "$folder"
        rmdir "$scratch"
    else
        mv "$scratch" "$folder"
    fi
    touch "$folder/.extracted"
    echo "$task: $(find "$folder" -name '*_all_questions.json' | wc -l) question files in $folder"
done
echo "done; archives are kept in $DEST (delete the *.tar.gz files to free space)"
