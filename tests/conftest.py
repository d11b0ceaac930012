import os

# Set before any test imports keras/tensorflow: quiet logs, small runs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CAPSLIB_PROFILE", "quick")
