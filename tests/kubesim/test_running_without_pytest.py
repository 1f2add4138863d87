"""Benchmarks and scripts start kubesim in a venv without test tools: `kubesim.running` needs no pytest."""

from __future__ import annotations

import subprocess
import sys


def test_kubesim_running_and_the_benchmarks_import_without_pytest() -> None:
    code = (
        "import sys\n"
        "class NoPytest:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pytest' or name.startswith(('pytest.', '_pytest')):\n"
        "            raise ImportError('pytest is not installed here')\n"
        "sys.meta_path.insert(0, NoPytest())\n"
        "import kubesim.running\n"
        "from kubesim.running import KubesimServer, start_inprocess, start_kubesim\n"
        "assert 'pytest' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
