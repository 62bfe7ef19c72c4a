#!/usr/bin/env bash
# GPU smoke test: each script trains a few updates on CUDA on each environment family (eager and --compile),
# fails if a run did not run on the GPU, and prints steps/s per script, env and mode (benchmarks/train_speed.py;
# steady_sps = after the first update, i.e. after compilation); with TMaze-v0 also AGaLiTe's fused kernels against its
# torch loops. On a machine with one GPU, in the repository root:
#     bash benchmarks/gpu_smoke.sh                 # every family (Memory Maze renders with EGL on the GPU)
#     bash benchmarks/gpu_smoke.sh TMaze-v0        # one family
#     COMPILE=off bash benchmarks/gpu_smoke.sh     # eager only (minutes; the default, both, adds compiled runs)
#     UPDATES=3 bash benchmarks/gpu_smoke.sh       # updates per run (default 4; at least 3: steady_sps is timed from the second update on)
# Writes benchmarks/results/gpu_smoke_<env id>.{csv,md}. A family whose package is not installed fails its line.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" || exit 1
declare -A PLAN=(  # env id -> "num_envs num_steps extra arguments"
  [TMaze-v0]="64 128"
  [MysteryPath-Grid-v0]="32 128 --async-envs"
  [Craftax-Classic-Symbolic-v1]="1024 64"
  [MemoryMaze-9x9-v0]="8 128 --async-envs"
)
UPDATES=${UPDATES:-4}; [ "$UPDATES" -ge 3 ] || { echo "UPDATES must be at least 3"; exit 1; }
ENVS=("$@"); [ ${#ENVS[@]} -eq 0 ] && ENVS=(TMaze-v0 MysteryPath-Grid-v0 Craftax-Classic-Symbolic-v1 MemoryMaze-9x9-v0)
status=0
for env in "${ENVS[@]}"; do
  read -r n k extra <<< "${PLAN[$env]:-16 128}"
  out="benchmarks/results/gpu_smoke_${env}"
  echo "== $env: $n envs x $k steps, $UPDATES updates per run ${extra}"
  MUJOCO_GL=${MUJOCO_GL:-egl} python benchmarks/train_speed.py --device cuda --env-id "$env" --num-envs "$n" \
    --total-timesteps $((n * k * UPDATES)) --extra="--num-steps $k $extra" --scripts agalite gtrxl lstm --compile "${COMPILE:-both}" \
    --timeout 900 --out "$out" || { echo "FAILED: $env"; status=1; continue; }
  if grep -q ",cpu," "$out.csv"; then echo "FAILED: a run of $env did not use the GPU ($out.csv)"; status=1; fi
done
# AGaLiTe's Triton kernels against its torch loops on the GPU: T-Maze SPS with --no-fused-kernels (next to the
# fused runs above) and the operators' and training step's times (benchmarks/kernel_speed.py)
if [[ " ${ENVS[*]} " == *" TMaze-v0 "* ]]; then
  echo "== TMaze-v0, ppo_agalite.py with its torch loops (--no-fused-kernels); then benchmarks/kernel_speed.py"
  python benchmarks/train_speed.py --device cuda --env-id TMaze-v0 --num-envs 64 --total-timesteps $((64 * 128 * UPDATES)) \
    --extra="--num-steps 128 --no-fused-kernels" --scripts agalite --compile "${COMPILE:-both}" --timeout 900 \
    --out benchmarks/results/gpu_smoke_TMaze-v0_loops || { echo "FAILED: TMaze-v0 with the loops"; status=1; }
  python benchmarks/kernel_speed.py --device cuda --out benchmarks/results/kernels_cuda || { echo "FAILED: kernel_speed.py"; status=1; }
fi
exit $status
