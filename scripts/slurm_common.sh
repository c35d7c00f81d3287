# Shared by run.slurm and eval.slurm: environment activation and launcher selection (README "Multi-GPU and multi-node").
mkdir -p job_output
export PYTHONPATH="${PYTHONPATH:-}:./bimodal_exps"
export HUGGINGFACE_HUB_CACHE=${HUGGINGFACE_HUB_CACHE:-./checkpoints/huggingface}

# Interpreter: $VENV if given; else the conda env $CONDA_ENV (default csce689_proj; CONDA_ENV= skips conda)
# when conda exists (a failed activation stops the job, never a silent fallback); else ./.venv; else python3.
CONDA_ENV=${CONDA_ENV-csce689_proj}
if [[ -n "${VENV:-}" ]]; then
    PYTHON="${VENV}/bin/python"
elif [[ -n "${CONDA_ENV}" ]] && command -v conda >/dev/null 2>&1; then
    eval "$(conda shell.bash hook)"
    conda activate "${CONDA_ENV}" || { echo "conda activate ${CONDA_ENV} failed (set CONDA_ENV or VENV)" >&2; exit 1; }
    PYTHON=python
elif [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
else
    PYTHON=python3
fi
echo "interpreter: $(command -v "${PYTHON}" || echo "${PYTHON}")" >&2

# launch SCRIPT ARGS...: `srun` when SLURM runs several tasks (one rank per task; -K ends the step when a
# task fails), `torchrun` when NGPUS > 1 without SLURM, else one process on GPU 0. `exec` hands the job's
# signals (pre-emption, --signal=B:USR1@...) straight to the launcher. DRY_RUN=1 prints the command instead.
launch() {
    local cmd
    if [[ "${SLURM_NTASKS:-1}" -gt 1 ]]; then
        cmd=(srun --kill-on-bad-exit=1 "${PYTHON}" -u "$@" --distributed --world_size "${SLURM_NTASKS}")
    elif [[ "${NGPUS:-1}" -gt 1 ]]; then
        cmd=("${PYTHON}" -m torch.distributed.run --standalone --nproc_per_node="${NGPUS}" "$@" --distributed)
    else
        export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
        cmd=("${PYTHON}" -u "$@" --no-distributed)
    fi
    if [[ -n "${DRY_RUN:-}" ]]; then
        printf '%q ' "${cmd[@]}"
        printf '\n'
    else
        exec "${cmd[@]}"
    fi
}
