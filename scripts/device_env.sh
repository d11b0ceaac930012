# Sourced by the GPU scripts: Python path and backend for a lent device machine.
# Installs the carried wheels (.whl/) only where Keras is missing (the device
# image has JAX but no Keras); elsewhere the current environment is used.
PY=${PYTHON:-python3}
if ! $PY -c "import keras" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
