"""The diffusion worker: the platform's stock worker with our model runner.

GPU: ``Worker._make_model_runner`` is vLLM's hook for this.  CPU:
``CPUWorker.init_device`` builds its runner inline, so we replace it right
after (the stock runner is cheap to build on CPU and is dropped at once).
"""

from __future__ import annotations

from vllm.platforms import current_platform

from vllm_dllm_plugin.worker.runner import DiffusionModelRunner

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_worker import CPUWorker

    class DiffusionWorker(CPUWorker):

        def init_device(self):
            super().init_device()
            self.model_runner = DiffusionModelRunner(self.vllm_config, self.device)
else:
    from vllm.v1.worker.gpu_worker import Worker

    class DiffusionWorker(Worker):  # type: ignore[no-redef]

        def _make_model_runner(self):
            return DiffusionModelRunner(self.vllm_config, self.device)
