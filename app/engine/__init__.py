"""The engine process: owns llama.cpp, knows nothing of Qt."""
