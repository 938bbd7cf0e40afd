"""The device-farm runner: an HTTP service that runs .tflite models on attached iPhones or the host CPU."""
