python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .scratch/whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/site/nvidia/cu13/lib:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
export BATCHSCORE_CACHE=/tmp/bscache
