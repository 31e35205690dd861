import subprocess
import sys

import tunekit


def test_public_exports_are_pinned():
    assert sorted(tunekit.__all__) == sorted([
        "ConfigError", "DataError", "InputError", "ModelError", "RegistryError", "TunekitConfig", "TunekitError",
        "__version__", "load_config", "run",
    ])
    assert tunekit.__version__ == "0.1.0"


def test_importing_tunekit_does_not_load_torch_or_mlflow():
    code = "import sys, tunekit; print('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
