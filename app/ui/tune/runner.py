"""Runs autotune on the app's own engine (through EngineController.run_engine_job), so the model
is never loaded twice; progress crosses from the engine worker to the UI thread as a signal.
Beside a GPU, the first tuning on a machine first times its CPU kernels for the advisor (the
kernel probe, app/tune/expert_read_probe.py) and hands the rate to the app state."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.engine.client import EngineClient
from app.engine.protocol import LoadParams
from app.gguf.info import read_model
from app.hardware import Hardware, detect
from app.hardware.expert_read import ExpertReadRate
from app.tune.autotune import (
    TUNE_WORKLOAD,
    TuneResult,
    autotune,
    machine_id,
    remember,
    tune_key,
)
from app.tune.expert_read_probe import ensure_expert_read, expert_types
from app.tune.measure import Measurer
from app.tune.strategies import budget_for
from app.ui.app_state import AppState
from app.ui.engine_controller import EngineController
from app.ui.engine_worker import JobOutcome
from app.ui.tune.panel import TunePanel, TuneRequest


class TuneRunner(QObject):
    """Connects a TunePanel to the engine controller; the machine is the app state's."""

    _progress = Signal(object)  # TuneProgress, emitted on the engine worker (queued to the UI)
    _kernels_timed = Signal(object)  # ExpertReadRate, likewise
    _probe_step = Signal(str)  # what the kernel probe does now, likewise

    def __init__(self, state: AppState, controller: EngineController, panel: TunePanel) -> None:
        super().__init__(panel)
        self.state = state
        self.controller = controller
        self.panel = panel
        self.cancel = threading.Event()
        self.n_layer = 0
        self._progress.connect(lambda p: self.panel.show_progress(p, self.n_layer))
        self._kernels_timed.connect(self._remember_kernels)
        self._probe_step.connect(panel.show_preparing)
        panel.stop_requested.connect(self.cancel.set)

    def start(self, request: TuneRequest) -> None:
        """Tune ``request.model`` from ``request.start``; the winner is loaded at the end."""
        self.cancel.clear()
        self.n_layer = request.n_layer
        self.panel.show_started()
        hardware = self.state.hardware  # read here, on the UI thread, for the job's thread
        self.controller.run_engine_job(lambda client: self._job(client, request, hardware),
                                       self._done, self.panel.show_failed)

    def _job(self, client: EngineClient, request: TuneRequest, hardware: Hardware | None) -> JobOutcome:
        path = Path(request.model)
        model = read_model(path)
        build = client.info()
        gpus = [d for d in build.devices if d.kind == "gpu"]
        budget = budget_for(gpus, request.vram_budget) if gpus else None
        hardware = hardware or detect(nvml=False)  # tuned before the app state found the machine
        if gpus:  # remembered, or measured now (the first tuning on this machine)
            kernels = ensure_expert_read(client, request.start.n_threads or None, types=expert_types(model),
                                         progress=self._probe_step.emit, cancel=self.cancel)
            if kernels is not None:
                self._kernels_timed.emit(kernels)
        measurer = Measurer(client, path, gpu_budget=budget.usable if budget else None, cancel=self.cancel)
        result = autotune(measurer, model, request.start, budget,  # type: ignore[arg-type]
                          physical_cores=hardware.cpu.physical_cores, time_limit=request.seconds,
                          progress=self._progress.emit,
                          workload=replace(TUNE_WORKLOAD, decode_depth=request.decode_depth),
                          hot_experts=build.expert_cache_patch and bool(gpus))
        if not result.best.ok:
            return JobOutcome(result)
        gpu = budget.gpu if budget else None
        remember(tune_key(path, machine_id(hardware.cpu.model, gpu), request.vram_budget), result)
        # the winner stays loaded (and a restart loads it again)
        params = LoadParams(model=str(path), placement=result.best.plan)
        return JobOutcome(result, client.load(params), params)

    def _remember_kernels(self, kernels: ExpertReadRate) -> None:
        """The advisor's pages predict from the rate (the app state's RAM figures carry it)."""
        if self.state.ram is not None and self.state.ram.expert_read != kernels:
            self.state.set_ram(replace(self.state.ram, expert_read=kernels))

    def _done(self, result: TuneResult) -> None:
        self.panel.show_result(result, self.n_layer)
