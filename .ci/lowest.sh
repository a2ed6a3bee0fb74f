#!/usr/bin/env bash
# Lowest allowed versions: resolve every direct dependency of soi[train,gen,dev] at its declared floor (uv's
# lowest-direct resolution), install them into a fresh virtual environment and run a fast test subset.
#
# torch is the one exception: it is pinned to the CPU wheel CI installs (SOI_LOWEST_TORCH, default
# torch==2.13.0+cpu, found through PIP_FIND_LINKS), because the floor's PyPI wheel pulls GBs of CUDA packages.
# Usage: bash .ci/lowest.sh [extra pytest args]; prints the resolved versions of the direct dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet uv
uv="$work/tools/bin/uv"
echo "${SOI_LOWEST_TORCH:-torch==2.13.0+cpu}" > "$work/override.txt"
find_links=()
for d in ${PIP_FIND_LINKS:-}; do find_links+=(--find-links "$d"); done

"$uv" pip compile pyproject.toml --quiet --extra train --extra gen --extra dev --resolution lowest-direct \
  --python "$(command -v python3)" --override "$work/override.txt" "${find_links[@]}" --no-header \
  -o "$work/lowest.txt"
"$uv" venv --quiet --python "$(command -v python3)" "$work/venv"
"$uv" pip install --quiet --python "$work/venv/bin/python" "${find_links[@]}" -r "$work/lowest.txt"
"$uv" pip install --quiet --python "$work/venv/bin/python" --no-deps -e .
echo "lowest: resolved in $((SECONDS - start)) s:"
"$work/venv/bin/python" - <<'PY'
import importlib.metadata as md, re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + [r for k in ("train", "gen", "offline", "dev")
                                  for r in project["optional-dependencies"][k]]
names = sorted({re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in reqs} - {"soi"})
print(" ".join(f"{n}=={md.version(n)}" for n in names))
PY

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
if [ -z "${SOI_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  SOI_DATA_DIR="$(cd ../shared/data && pwd)"
  export SOI_DATA_DIR
fi
# the fast subset: store, metrics, data, selection, CLI, the HF Trainer recorder (without its multi-process
# resume / DDP / real-model tests), query engines, trackers, hub data
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_store.py tests/test_metrics.py tests/test_categories.py tests/test_transitions.py \
  tests/test_data.py tests/test_selection.py tests/test_cli_analyze.py tests/test_cli_compare.py \
  tests/test_record_hf.py tests/test_install.py tests/test_query.py tests/test_trackers.py tests/test_hub.py \
  tests/test_hub_datasets.py -k "not killed and not ddp and not minilm_on_sst2 and not readme" "$@"
echo "lowest: done in $((SECONDS - start)) s"
