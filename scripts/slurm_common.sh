# Shared by run.slurm and eval.slurm: environment activation and launcher selection (pipeline §7.4).
mkdir -p job_output
export PYTHONPATH="${PYTHONPATH:-}:./bimodal_exps"
export HUGGINGFACE_HUB_CACHE=${HUGGINGFACE_HUB_CACHE:-./checkpoints/huggingface}

# Interpreter: $VENV if given, else the conda env $CONDA_ENV when conda exists, else ./.venv, else python3.
if [[ -n "${VENV:-}" ]]; then
    PYTHON="${VENV}/bin/python"
elif [[ -n "${CONDA_ENV:-}" ]] && command -v conda >/dev/null 2>&1; then
    eval "$(conda shell.bash hook)"
    conda activate "${CONDA_ENV}"
    PYTHON=python
elif [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
else
    PYTHON=python3
fi
echo "interpreter: $(command -v "${PYTHON}" || echo "${PYTHON}")" >&2

# launch SCRIPT ARGS...: srun when SLURM runs several tasks, torchrun when NGPUS > 1, else one process.
launch() {
    local cmd
    if [[ "${SLURM_NTASKS:-1}" -gt 1 ]]; then
        cmd=(srun "${PYTHON}" -u "$@" --distributed --world_size "${SLURM_NTASKS}")
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
        "${cmd[@]}"
    fi
}
