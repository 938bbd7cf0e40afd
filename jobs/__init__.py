"""One module per pipeline step, each runnable as `python -m jobs.<step>`."""

import os

# Before anything imports TensorFlow, whoever starts the job (make, Argo, a person): its C++
# start-up notices (absl's "All log messages before absl::InitializeLog()", the CPU
# instructions and oneDNN notes) are INFO/WARNING lines; level 2 keeps ERROR and FATAL, so a
# real failure still shows. A value the caller set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
