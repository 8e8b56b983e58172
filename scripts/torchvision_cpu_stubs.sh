#!/usr/bin/env bash
# Let a CUDA build of torchvision (what PyPI serves) load its CPU kernels on a CPU-only torch,
# for benchmarking only. Its _C.so links libc10_cuda.so and libtorch_cuda.so, which a +cpu torch
# lacks; this builds two stub libraries that define the missing c10::cuda / at::cuda symbols as
# functions that trap (they are only reached by CUDA tensors). Usage:
#   scripts/torchvision_cpu_stubs.sh /path/to/python-with-torch [outdir=/tmp/tvstub]
#   LD_LIBRARY_PATH=/tmp/tvstub python scripts/benchmark.py nms
set -euo pipefail
PY=${1:?python with torch and torchvision}
OUT=${2:-/tmp/tvstub}
mkdir -p "$OUT"
read -r SO TL < <("$PY" - <<'PYEOF'
import importlib.util, os
tv = os.path.dirname(importlib.util.find_spec("torchvision").origin)
th = os.path.dirname(importlib.util.find_spec("torch").origin)
print(os.path.join(tv, "_C.so"), os.path.join(th, "lib"))
PYEOF
)
nm -D --undefined-only "$SO" | awk '{print $2}' | grep -v '@' | sort -u > "$OUT/undefined.txt"
for f in "$TL"/libc10.so "$TL"/libtorch_cpu.so "$TL"/libtorch.so "$TL"/libtorch_python.so; do
  nm -D --defined-only "$f" | awk '{print $3}'
done | sort -u > "$OUT/defined.txt"
comm -23 "$OUT/undefined.txt" "$OUT/defined.txt" > "$OUT/missing.txt"
stub() {  # $1 = symbol pattern, $2 = library name
  local i=0
  for s in $(grep -E "$1" "$OUT/missing.txt" || true); do
    if [[ "$s" == *CUDACachingAllocator9allocatorE ]]; then
      echo "void* v$i[4] __asm__(\"$s\") = {0};"
    else
      echo "void f$i(void) __asm__(\"$s\"); void f$i(void) { __builtin_trap(); }"
    fi
    i=$((i + 1))
  done > "$OUT/$2.c"
  gcc -shared -fPIC -o "$OUT/lib$2.so" "$OUT/$2.c"
}
stub '^_ZN[K]?3c104cuda|^_ZNK3c104cuda' c10_cuda
stub '^_ZN2at4cuda' torch_cuda
echo "stubs in $OUT: LD_LIBRARY_PATH=$OUT $PY -c 'import torchvision; torchvision.ops.nms'"
