#!/usr/bin/env bash
# The device machine's install-and-run for benchmarks/gpu_check.py (benchmarks/README.md, "Packaging for
# the device machine"): re-join the DALI parts earlier calls left in /tmp/gd (checked against
# .whl/dali.sha256), install the carried wheels into /tmp/site, gandist itself editable from this tree,
# then run every step under a 470 s timeout. Arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
wheels=()
if compgen -G "/tmp/gd/dali.tar.*" >/dev/null; then
  (cd /tmp/gd && sha256sum --quiet -c "$root/.whl/dali.sha256" && cat dali.tar.* | tar xf -)
  wheels+=(/tmp/gd/*.whl)
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  wheels+=(.whl/*.whl)
fi
if ((${#wheels[@]})); then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${wheels[@]}"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e .
export PYTHONUNBUFFERED=1
exec timeout "${GPU_CHECK_TIMEOUT:-470}" python3 benchmarks/gpu_check.py "$@"
