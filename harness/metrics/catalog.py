"""The metric catalog: every figure a record, manifest or timeline carries, and the report's derived ones.

This is the one place a metric is described. The terminal summary, the markdown and HTML tables, the
compare policy's defaults and docs/metrics.md (`python -m harness.metrics --doc`) all read it. Adding a
metric is one entry here plus the code that measures it.
"""

from __future__ import annotations

from harness.metrics.base import Metric as M
from harness.metrics.base import Section

SECTIONS: tuple[Section, ...] = (
    Section(
        "Identity and labels",
        metrics=(
            M(
                "record_version",
                "integer",
                "version of this record layout; 1",
                measured="constant in harness/runner/case_runner.py",
                absent="never",
            ),
            M(
                "run_id",
                "text",
                "`<UTC stamp>-<suite name>-<6 hex>`, the run directory's name",
                measured="parent, when the run starts",
                absent="never",
            ),
            M(
                "case_id",
                "text",
                (
                    "first 16 hex digits of the sha256 of the case's identity (everything that determines "
                    "the measurement; run settings and names left out)"
                ),
                measured="parent, `CaseSpec.case_id`",
                absent="never",
            ),
            M(
                "case_name",
                "text",
                (
                    "`model/workload/techniques`, plus `@b<batch>s<seq>` when the matrix overrode the "
                    "workload's shape"
                ),
                measured="parent",
                absent="never",
            ),
            M("suite", "text", "the suite's name", measured="parent", absent="never"),
            M(
                "model_name",
                "text",
                "the suite's name for the model entry",
                measured="parent",
                absent="never",
            ),
            M(
                "workload_name",
                "text",
                "the suite's name for the workload entry",
                measured="parent",
                absent="never",
            ),
            M("workload_kind", "text", "`train`, `infer` or `distill`", measured="parent", absent="never"),
            M(
                "techniques_name",
                "text",
                "the suite's name for the technique combination",
                measured="parent",
                absent="never",
            ),
            M(
                "techniques",
                "list of text",
                "technique names in composition order; `[]` for the baseline",
                measured="parent",
                absent="never",
            ),
            M(
                "batch_size",
                "integer",
                "sequences per step (the global batch of a multi-rank case)",
                measured="parent, from the case",
                absent="never",
            ),
            M("seq_len", "integer", "tokens per sequence", measured="parent, from the case", absent="never"),
            M(
                "device",
                "text",
                "`cpu` or `cuda` (the case's; each rank's own device is in `ranks[].device`)",
                measured="parent, from the case",
                absent="never",
            ),
            M(
                "dtype",
                "text",
                "parameter dtype: `float32` or `bfloat16`",
                measured="parent, from the case",
                absent="never",
            ),
            M(
                "spec.<field>",
                "setting",
                (
                    "every field of the case definition (`harness/case.py` CaseSpec; meanings in "
                    "`harness/suite/schema.py` Defaults); `spec.techniques` is a list of `{name, config}`"
                ),
                measured="parent, `CaseSpec.model_dump`",
                absent="never; `null` where the suite left an optional setting unset",
            ),
            M(
                "spec.model.<field>",
                "setting",
                "the resolved ModelConfig fields of the model, before technique rewrites",
                measured="parent",
                absent="never",
            ),
            M(
                "spec.workload.<field>",
                "setting",
                "the resolved workload options, `kind` included",
                measured="parent",
                absent="never",
            ),
            M(
                "spec.workload.teacher_overrides.<field>",
                "setting",
                "distill: ModelConfig fields overriding the teacher's size",
                measured="parent",
                absent="absent for other workloads or without overrides",
            ),
            M(
                "node.host",
                "text",
                "`socket.gethostname()` of the machine that ran the case (the executor's node)",
                measured="node, beside the case process",
                absent="absent for cases refused in the driver",
            ),
            M(
                "node.cpu_model",
                "text",
                "`model name` of that node's `/proc/cpuinfo`",
                measured="node",
                absent="as `node.host`",
            ),
            M(
                "node.cpu_count",
                "count",
                "`os.cpu_count()` on that node",
                measured="node",
                absent="as `node.host`",
            ),
            M(
                "node.gpu_names",
                "list of text",
                "NVML device names on that node",
                measured="node, NVML",
                absent="`[]` without NVML",
            ),
            M(
                "node.gpu_driver_version",
                "text",
                "NVML driver version on that node",
                measured="node, NVML",
                absent="`null` without NVML",
            ),
            M(
                "node.ray_node_id",
                "text",
                "Ray's id of the node (`--executor ray`)",
                measured="node, `ray.get_runtime_context()`",
                absent="absent for other executors",
            ),
        ),
    ),
    Section(
        "Status",
        metrics=(
            M(
                "status",
                "text",
                (
                    "`ok`, `oom`, `timeout`, `error` or `unsupported`; the first pass (memory, then "
                    "timing) that did not end `ok` decides"
                ),
                measured=(
                    "parent: from the case process's own result, the sampler's memory-limit kill, a "
                    "SIGKILL the parent did not send (the kernel's OOM killer), the deadline, or a process"
                    " that died without a result"
                ),
                absent="never",
            ),
            M(
                "error",
                "text",
                "one line: `memory pass: ...` / `timing pass: ...` cause; for `unsupported` the reason",
                measured="parent",
                absent="`null` when `status` is `ok`",
            ),
            M(
                "exit_code",
                "integer",
                "return code of the failed pass's case process (negative: killed by that signal)",
                measured="parent, `Popen.returncode`",
                absent="absent unless status is `oom`, `timeout` or `error`",
            ),
            M(
                "stderr_tail",
                "text",
                "last 4000 characters of the failed pass's stderr (`cases/<case_id>/stderr-<pass>.txt`)",
                measured="parent",
                absent="absent unless status is `oom`, `timeout` or `error`",
            ),
            M(
                "traceback_tail",
                "text",
                "last 4000 characters of the Python traceback that ended the case",
                measured="case process (or the failing rank), `traceback.format_exc()`",
                absent=(
                    "absent unless the case process itself caught an exception that was not an "
                    "out-of-memory error"
                ),
            ),
            M(
                "oom_requested_bytes",
                "bytes",
                (
                    "size of the allocation that failed, parsed from the allocator's message (CPU `tried "
                    "to allocate N bytes`, CUDA `Tried to allocate 2.00 GiB`)"
                ),
                measured=(
                    'case process, on `MemoryError` / `torch.OutOfMemoryError` / "can\'t allocate memory"'
                ),
                absent="absent unless the case process caught an OOM; `null` when the message names no size",
            ),
        ),
    ),
    Section(
        "Host memory",
        metrics=(
            M(
                "host_rss_base_bytes",
                "bytes",
                (
                    "RSS of the case process right after `imported` (torch and the techniques' packages "
                    "imported, nothing built) = `phases.build.host_rss_start_bytes`; multi-rank: the "
                    "largest rank's"
                ),
                measured=(
                    "parent reads `/proc/<pid>/statm` right after resetting VmHWM at the `imported` mark"
                ),
                absent=(
                    "`null` when the case ended before `imported` or the process was gone at that instant;"
                    " absent for unsupported cases"
                ),
            ),
            M(
                "host_rss_peak_bytes",
                "bytes",
                (
                    "highest of `phases.<phase>.host_rss_peak_bytes` over `build`, `warmup`, `measured`; "
                    "multi-rank: the largest rank's"
                ),
                measured="parent, VmHWM per phase (see below)",
                absent=(
                    "`null` when no peak phase was measured (the case failed before `imported`); absent "
                    "for unsupported cases"
                ),
            ),
            M(
                "host_rss_peak_above_base_bytes",
                "bytes",
                "`host_rss_peak_bytes - host_rss_base_bytes`: what building and stepping the case added",
                measured="parent",
                absent="`null` when either operand is; absent for unsupported cases",
                gate="memory",
                display="process peak above base",
            ),
            M(
                "host_rss_sampled_peak_bytes",
                "bytes",
                (
                    "highest RSS the parent's sampler saw over `build`, `warmup`, `measured` (a lower "
                    "bound of the VmHWM figure; a cross-check)"
                ),
                measured=(
                    "parent sampler thread, `/proc/<pid>/statm` every `sample_interval_ms` (default 2 ms) "
                    "in the memory pass"
                ),
                absent=(
                    "`null` with no samples, and always in multi-rank records (the sampler sees only the "
                    "launcher); absent for unsupported cases"
                ),
            ),
            M(
                "host_file_rss_drop_bytes",
                "bytes",
                (
                    "largest `phases.<phase>.host_file_rss_drop_bytes` over `build`, `warmup`, `measured`:"
                    " file-backed pages the kernel took from the case while it ran. RSS falls with them "
                    "although the case freed nothing, so host figures above base can read low by up to "
                    "this much (0 on a machine with memory to spare)"
                ),
                measured="parent sampler",
                absent=(
                    "`null` where `/proc` is missing and for multi-rank cases (the sampler sees the "
                    "launcher, not the ranks); absent for unsupported cases"
                ),
            ),
            M(
                "host_memory_disturbed",
                "bool",
                (
                    "`true` when `host_file_rss_drop_bytes` exceeds 1 MiB "
                    "(`case_runner.DISTURBED_FILE_RSS_DROP_BYTES`, the gate's absolute memory tolerance): "
                    "the host figures measure the machine's memory pressure as much as the case. "
                    "`harness compare` does not call such a figure unchanged (docs/gate.md)"
                ),
                measured="parent",
                absent=(
                    "`null` where `/proc` is missing and for multi-rank cases (the sampler sees the "
                    "launcher, not the ranks); absent for unsupported cases"
                ),
            ),
            M(
                "host_memory_disturbed_reason",
                "text",
                "how much the kernel reclaimed, and in which phase",
                measured="parent",
                absent="`null` when the host figures were not disturbed",
            ),
            M(
                "host_peak_method",
                "text",
                (
                    "`vmhwm` (exact kernel high-water mark, Linux) or `sampled` (no `/proc`: the sampled "
                    "peak stands in)"
                ),
                measured="parent, `procmem.HAVE_PROC`",
                absent="absent for unsupported cases",
            ),
            M(
                "phases.<phase>.host_rss_start_bytes",
                "bytes",
                "RSS at the start of the phase (the instant VmHWM was reset)",
                measured="parent, `/proc/<pid>/statm` at the previous mark",
                absent="`null` for `startup` (the process did not exist yet)",
            ),
            M(
                "phases.<phase>.host_rss_peak_bytes",
                "bytes",
                "the kernel's resident high-water mark over the phase alone",
                measured=(
                    "parent reads `VmHWM` from `/proc/<pid>/status` at the mark that ends the phase, then "
                    "writes `5` to `/proc/<pid>/clear_refs` before the child goes on; where `/proc` is "
                    "missing, the sampled peak"
                ),
                absent="`null` when neither could be read (the process was gone)",
            ),
            M(
                "phases.<phase>.host_rss_sampled_peak_bytes",
                "bytes",
                "highest sampled RSS during the phase",
                measured="parent sampler",
                absent="`null` when the phase got no sample",
            ),
            M(
                "phases.<phase>.host_file_rss_drop_bytes",
                "bytes",
                (
                    "largest fall, during the phase, of the case's file-backed resident pages below their "
                    "highest level since the imports (statm `shared`: RssFile + RssShmem): the kernel "
                    "reclaiming library code and mapped files under memory pressure from other work"
                ),
                measured="parent sampler, `/proc/<pid>/statm` with each RSS sample",
                absent="`null` for `startup` and where `/proc` is missing",
            ),
            M(
                "phases.<phase>.duration_s",
                "s",
                (
                    "time between the marks that start and end the phase, on the parent's monotonic clock "
                    "(includes the pipe round trip)"
                ),
                measured="parent, `time.monotonic()`, rounded to 1 us",
                absent=(
                    "a phase cut short (timeout, crash) ends when the parent noticed; later phases are absent"
                ),
            ),
            M(
                "host_memory_scope",
                "text",
                (
                    "multi-rank only: says the host figures are the maximum over ranks, each rank's own "
                    "VmHWM, and that `launcher_*` is the case process"
                ),
                measured="parent (`case_runner._rank_memory_fields`)",
                absent="absent for single-process cases",
            ),
            M(
                "serving",
                "bool",
                (
                    "the session serves a built model (trains nothing: infer, generate); its headline "
                    "memory is then the measured phase's steady state"
                ),
                measured="case process, `Session.serving`",
                absent="absent when the case failed before the model was built",
            ),
            M(
                "memory_headline_scope",
                "text",
                (
                    "which phases `host_rss_peak_above_base_bytes` / `gpu_peak_allocated_bytes` cover: the "
                    "measured phase (serving) or build + warm-up + measured"
                ),
                measured="parent, `case_runner.serving_memory_fields`",
                absent="absent for multi-rank and unsupported cases",
            ),
            M(
                "host_serving_rss_above_base_bytes",
                "bytes",
                (
                    "serving steady state: `phases.measured.host_rss_peak_bytes - host_rss_base_bytes`; the"
                    " headline of a serving case (a deployment loads and compresses once, then serves)"
                ),
                measured="parent",
                absent="absent unless `serving`; `null` when either operand is",
                display="serving peak above base",
            ),
            M(
                "host_build_peak_above_base_bytes",
                "bytes",
                (
                    "the build phase's peak above base: the cost to produce the model (the fp32 weights and"
                    " their compressed replacement coexist)"
                ),
                measured="parent",
                absent="absent for multi-rank and unsupported cases; `null` when either operand is",
                display="build-phase peak above base",
            ),
            M(
                "host_all_phases_peak_above_base_bytes",
                "bytes",
                (
                    "serving cases: the peak over build, warm-up and measured above base (what "
                    "`host_rss_peak_above_base_bytes` is for training cases)"
                ),
                measured="parent",
                absent="absent unless `serving`",
            ),
            M(
                "sample_interval_requested_s",
                "s",
                "the memory pass's sampling period asked for (`sample_interval_ms`)",
                measured="parent",
                absent="absent for unsupported cases",
            ),
            M(
                "sample_interval_median_s",
                "s",
                "median gap between consecutive RSS samples the sampler achieved",
                measured="parent, `sampler.achieved_interval`",
                absent="`null` with fewer than 2 samples",
            ),
            M(
                "sample_interval_max_gap_s",
                "s",
                (
                    "largest gap between consecutive samples (a peak shorter than it can fall between "
                    "samples; VmHWM stays the figure)"
                ),
                measured="parent, `sampler.achieved_interval`",
                absent="as `sample_interval_median_s`",
            ),
            M(
                "sample_count",
                "count",
                "RSS samples taken in the memory pass",
                measured="parent",
                absent="absent for unsupported cases",
            ),
        ),
    ),
    Section(
        "GPU memory",
        metrics=(
            M(
                "gpu_peak_allocated_bytes",
                "bytes",
                (
                    "torch's `max_memory_allocated()` over the `warmup` and `measured` phases (tensor "
                    "bytes; no CUDA context, no cache); multi-rank: the largest rank's, over `build` + "
                    "`warmup` + `measured`"
                ),
                measured="case process: `synchronize()`, read, `reset_peak_memory_stats()` at every mark",
                absent="`null` when the case does not run on CUDA (`gpu_unavailable_reason`)",
                gate="memory",
                display="tensor peak (allocator)",
            ),
            M(
                "gpu_peak_reserved_bytes",
                "bytes",
                "torch's `max_memory_reserved()` likewise (allocated + the caching allocator's reserve)",
                measured="case process, as above",
                absent="`null` when the case does not run on CUDA (`gpu_unavailable_reason`)",
                gate="memory",
                display="reserved peak",
            ),
            M(
                "gpu_process_peak_bytes",
                "bytes",
                (
                    "highest NVML `usedGpuMemory` of the case process's pid over the whole memory pass "
                    "(includes the CUDA context; ranks, being grandchildren, are not seen)"
                ),
                measured="parent sampler, `nvmlDeviceGetComputeRunningProcesses`, every `sample_interval_ms`",
                absent="`null` without NVML (`gpu_unavailable_reason`)",
            ),
            M(
                "gpu_device_peak_bytes",
                "bytes",
                (
                    "highest NVML `used` memory of the GPUs the process uses (GPU 0 when it uses none), "
                    "other tenants included"
                ),
                measured="parent sampler, `nvmlDeviceGetMemoryInfo`",
                absent="`null` without NVML (`gpu_unavailable_reason`)",
            ),
            M(
                "gpu_unavailable_reason",
                "text",
                (
                    "why GPU figures are `null` (`torch allocator figures: the case does not run on CUDA`;"
                    " `NVML: ...`)"
                ),
                measured="parent",
                absent="`null` when every GPU figure was measured; absent for unsupported cases",
            ),
            M(
                "gpu_serving_peak_allocated_bytes",
                "bytes",
                "torch's allocator peak of the measured phase (serving steady state)",
                measured="case process, at the `measured` mark",
                absent="absent unless `serving`; `null` off CUDA",
            ),
            M(
                "gpu_build_peak_allocated_bytes",
                "bytes",
                "torch's allocator peak of the build phase",
                measured="case process, at the `built` mark",
                absent="absent for multi-rank cases; `null` off CUDA",
            ),
            M(
                "phases.<phase>.gpu_peak_allocated_bytes",
                "bytes",
                "torch's `max_memory_allocated()` over the phase alone",
                measured="case process, sent with the mark that ends the phase",
                absent=(
                    "absent off CUDA, for `extras` (the final mark carries none) and in multi-rank "
                    "records' `phases`"
                ),
            ),
            M(
                "phases.<phase>.gpu_peak_reserved_bytes",
                "bytes",
                "torch's `max_memory_reserved()` over the phase alone",
                measured="case process, as above",
                absent="as above",
            ),
        ),
    ),
    Section(
        "Model size",
        metrics=(
            M(
                "param_count",
                "count",
                (
                    "elements of the dense model the built one represents (shared tensors once; a quantized "
                    "or CSR Linear counts out x in, never packed elements; a DTensor's global size)"
                ),
                measured="case process, `analysis.storage.dense_param_count` right after build",
                absent="absent when the case failed before the model was built, and for unsupported cases",
            ),
            M(
                "stored_weight_bytes",
                "bytes",
                (
                    "bytes the model's weights occupy as stored, every storage once: parameters, buffers, "
                    "tensor attributes (masks' recomputed weight), torch.ao packed int8 weights + scales, "
                    "bitsandbytes scales and quant state, torchao inner tensors, CSR arrays; tied and "
                    "shared weights once. The one model-bytes figure comparable across techniques"
                ),
                measured="case process, `analysis.storage.stored_weight_bytes` right after build",
                absent="as `param_count`",
                display="weights stored",
            ),
            M(
                "param_bytes",
                "bytes",
                ("`numel * element_size` over the same parameters (quantized storage as torch reports it)"),
                measured="case process, after build",
                absent="as `param_count`",
            ),
            M(
                "trainable_param_count",
                "count",
                "elements of the parameters with `requires_grad`",
                measured="case process, after build",
                absent="as `param_count`",
            ),
            M(
                "buffer_bytes",
                "bytes",
                (
                    "`numel * element_size` over the model's buffers (masks, CSR arrays, ...), shared ones"
                    " once"
                ),
                measured="case process, after build",
                absent="as `param_count`",
            ),
            M(
                "optimizer_implementation",
                "text",
                "how torch.optim runs the update: `for_loop`, `foreach` or `fused`",
                measured=(
                    "case process, from the built optimizer's `foreach`/`fused` (unset: torch's rule for the"
                    " device: foreach on CUDA, else for_loop)"
                ),
                absent="absent for optimizers without that choice (bitsandbytes, torchao, ZeRO-1), inference",
            ),
            M(
                "optimizer_implementation_reason",
                "text",
                (
                    "why: `torch's default for <device> parameters (foreach, fused unset)` or `chosen in the"
                    " suite` (`adamw: {implementation: ...}`)"
                ),
                measured="as above",
                absent="as `optimizer_implementation`",
            ),
        ),
    ),
    Section(
        "Time",
        metrics=(
            M(
                "step_time_s",
                "s, list",
                (
                    "wall time of every measured step, all timing passes pooled in order; multi-rank: per "
                    "step the slowest rank's"
                ),
                measured=(
                    "case process, `time.perf_counter()` around `session.step(i)`, with "
                    "`torch.cuda.synchronize()` before and after on CUDA; warm-up steps excluded"
                ),
                absent=(
                    "absent when the memory pass failed or timed no step (the times come from the timing "
                    "passes that ended ok, else from the memory pass)"
                ),
                gate="time",
                display="step time",
            ),
            M(
                "step_time_s_by_repeat",
                "s, list of lists",
                (
                    "the same step times, one list per timing pass (one list, the memory pass's, with "
                    "`timing_source: memory_pass`)"
                ),
                measured="case processes",
                absent="as `step_time_s`",
            ),
            M(
                "step_time_s_median",
                "s",
                "median of `step_time_s`",
                measured="parent, `statistics.median`",
                absent="as `step_time_s`",
                display="step time median",
                screen_unit="ms",
                fmt=".1f",
                column=5,
            ),
            M(
                "step_time_s_iqr",
                "s",
                (
                    "inter-quartile range of `step_time_s` (inclusive quantiles, numpy's default); 0 for "
                    "fewer than 2 steps"
                ),
                measured="parent",
                absent="as `step_time_s`",
                display="step time IQR",
                screen_unit="ms",
                fmt=".1f",
            ),
            M(
                "step_cpu_time_s",
                "s, list",
                (
                    "CPU time of the whole case process (all threads) per measured step; multi-rank: "
                    "summed over ranks"
                ),
                measured="case process, `time.process_time()` around each step",
                absent="as `step_time_s`",
            ),
            M(
                "step_cpu_time_s_median",
                "s",
                "median of `step_cpu_time_s`",
                measured="parent",
                absent="as `step_time_s`; `null` if the list is empty",
                display="step CPU time median",
                screen_unit="ms",
                fmt=".1f",
            ),
            M(
                "step_wall_over_cpu_ratio",
                "ratio",
                (
                    "`step_time_s_median / step_cpu_time_s_median`: about 1 (below 1 with several threads) "
                    "when the case had its cores to itself"
                ),
                measured="parent",
                absent="as `step_cpu_time_s_median`",
                display="wall / CPU",
                fmt=".2f",
            ),
            M(
                "step_time_disturbed",
                "bool",
                (
                    "`true` when `step_wall_over_cpu_ratio` exceeds 1.15 "
                    "(`hostload.DISTURBED_WALL_OVER_CPU`: the steps waited for a core) or the machine's "
                    "CPU pressure during the timing pass exceeded 10 % "
                    "(`hostload.BUSY_CPU_PRESSURE_FRACTION`: other work beside it shares cores, caches "
                    "and memory bandwidth); either way the times "
                    "measure the machine's load as much as the technique"
                ),
                measured="parent",
                absent="`null` without step CPU times",
            ),
            M(
                "step_time_disturbed_reason",
                "text",
                "which bound `step_time_disturbed` crossed, with the figure",
                measured="parent",
                absent="`null` when the times were not disturbed",
            ),
            M(
                "step_time_vs_baseline_ratio",
                "ratio",
                "`step_time_s` median of the case over its baseline's (same model, workload, shape, run)",
                measured="parent, after the case's last pass",
                absent="absent for baselines and where either has no step times",
                fmt=".2f",
            ),
            M(
                "step_time_vs_baseline_ci95_low_ratio",
                "ratio",
                (
                    "lower end of the 95 % bootstrap interval of `step_time_vs_baseline_ratio` (2000 "
                    "resamples of both step lists, percentile method)"
                ),
                measured="parent",
                absent="as `step_time_vs_baseline_ratio`",
                fmt=".2f",
            ),
            M(
                "step_time_vs_baseline_ci95_high_ratio",
                "ratio",
                "upper end of the same interval",
                measured="parent",
                absent="as `step_time_vs_baseline_ratio`",
                fmt=".2f",
            ),
            M(
                "step_cpu_time_vs_baseline_ratio",
                "ratio",
                (
                    "`step_cpu_time_s_median` of the case over its baseline's: follows the work, far less "
                    "the load"
                ),
                measured="parent",
                absent="as `step_time_vs_baseline_ratio`; `null` without CPU times",
                fmt=".2f",
            ),
            M(
                "step_time_vs_baseline_disturbed",
                "bool",
                (
                    "`true` when the case's or its baseline's times were `step_time_disturbed`: read the "
                    "CPU-time ratio instead"
                ),
                measured="parent",
                absent="as `step_time_vs_baseline_ratio`",
            ),
            M(
                "timing_load",
                "list of objects",
                (
                    "one per timing pass, the machine's load around it: `wall_s`, `loadavg_1m_start`, "
                    "`loadavg_1m_end`, `cpu_count`, `cpu_pressure_some_fraction` (share of the pass in "
                    "which some task waited for a CPU: `/proc/pressure/cpu` `some total`), "
                    "`cpu_steal_fraction` (stolen share of all CPU time, `/proc/stat`)"
                ),
                measured="parent, `/proc` before and after each timing pass",
                absent="absent without timing passes; PSI and steal `null` where the kernel has none",
            ),
            M(
                "timing_loadavg_1m_max",
                "1",
                "the highest 1-minute load average at the end of a timing pass",
                measured="parent",
                absent="as `timing_load`",
            ),
            M(
                "timing_cpu_pressure_some_fraction_max",
                "fraction",
                "the highest `cpu_pressure_some_fraction` over the timing passes",
                measured="parent",
                absent="as `timing_load`; `null` without PSI",
            ),
            M(
                "timing_cpu_steal_fraction_max",
                "fraction",
                "the highest `cpu_steal_fraction` over the timing passes",
                measured="parent",
                absent="as `timing_load`; `null` without `/proc/stat`",
            ),
            M(
                "memory_pass_warmup_step_count",
                "count",
                (
                    "warm-up steps the memory pass ran: it stops once the per-step high-water mark "
                    "(VmHWM, and torch's CUDA peak) has not risen (VmHWM: by more than 16 KiB) for 2 steps, "
                    "at least 3 steps; the first timing pass runs all (losses and extras come from it)"
                ),
                measured="case process",
                absent=(
                    "absent when the memory pass ran every warm-up step (no timing pass, fewer than 3 "
                    "steps, or the peak kept rising)"
                ),
            ),
            M(
                "memory_pass_measured_step_count",
                "count",
                "measured steps the memory pass ran, by the same rule",
                measured="case process",
                absent="as `memory_pass_warmup_step_count`",
            ),
            M(
                "timing_source",
                "text",
                (
                    "`timing_pass` (separate processes, glibc's default allocator, 20 ms sampler) or "
                    "`memory_pass`"
                ),
                measured="parent",
                absent="as `step_time_s`",
            ),
            M(
                "threads",
                "integer",
                "torch intra-op threads the case ran with (`OMP_NUM_THREADS`/`MKL_NUM_THREADS` match)",
                measured="case process, `torch.get_num_threads()` after `set_num_threads(case.threads)`",
                absent="absent for unsupported cases",
                rename="torch_thread_count",
            ),
            M(
                "started_at",
                "timestamp",
                "when the parent started the case (ISO-8601 UTC, seconds)",
                measured="parent",
                absent="never",
            ),
            M(
                "ended_at",
                "timestamp",
                "when the parent finished the record",
                measured="parent",
                absent="never",
            ),
            M(
                "wall_time_s",
                "s",
                (
                    "the case's own time in the parent: its passes, process starts included (not the other "
                    "cases' passes interleaved with them), rounded to 1 ms"
                ),
                measured="parent, `time.monotonic()`",
                absent="absent for unsupported cases",
            ),
            M(
                "process_start",
                "text",
                (
                    "how the memory pass's case process started: `fork_server` (forked from a server that "
                    "imported torch once per runner, docs/process-start.md) or `spawn` (a fresh "
                    "`python -m harness.runner.child`)"
                ),
                measured="parent, `runner/parent.py` `_start`",
                absent="absent for unsupported cases",
            ),
            M(
                "process_start_reason",
                "text",
                "why the case process was spawned rather than forked from the fork server",
                measured="parent, `runner/forkserver.py`",
                absent="`null` when `process_start` is `fork_server`; absent for unsupported cases",
            ),
        ),
    ),
    Section(
        "Throughput and compute",
        metrics=(
            M(
                "samples_per_step",
                "count",
                "sequences one step consumes (the global batch)",
                measured="case process, from the session",
                absent="absent when the case failed before build, and for unsupported cases",
            ),
            M(
                "tokens_per_step",
                "count",
                "tokens one step consumes: `batch_size * seq_len`",
                measured="case process, from the session",
                absent="as `samples_per_step`",
            ),
            M(
                "samples_per_s",
                "1/s",
                "`samples_per_step / step_time_s_median`",
                measured="parent",
                absent="absent with `step_time_s`; `null` when the median is 0",
                screen_unit="samples/s",
            ),
            M(
                "tokens_per_s",
                "1/s",
                "`tokens_per_step / step_time_s_median`",
                measured="parent",
                absent="as `samples_per_s`",
                display="throughput",
                screen_unit="tokens/s",
                column=7,
            ),
            M(
                "model_flops_per_step",
                "FLOPs",
                (
                    "analytic FLOPs of one step of the dense model the suite defines (technique rewrites "
                    "such as pruning or LoRA not reflected): per token 6N + 12·L·d·s (train) or 2N + "
                    "4·L·d·s (infer), N = non-embedding parameters (PaLM appendix B)"
                ),
                measured="parent, `analysis.flops.flops_per_step`, after the passes",
                absent=(
                    "absent without a step time, for a workload kind without a formula "
                    "(`flops_unavailable_reason`), or when the MFU computation raised "
                    "(`mfu_unavailable_reason`)"
                ),
            ),
            M(
                "hardware_flops_per_step",
                "FLOPs",
                "`model_flops_per_step` plus the forward matmuls activation checkpointing recomputes",
                measured="parent, analytic",
                absent="as `model_flops_per_step`",
            ),
            M(
                "matmul_flops_per_step",
                "FLOPs",
                (
                    "the same work counted over matrix products only (what `FlopCounterMode` sees: no "
                    "biases, LayerNorm or element-wise ops)"
                ),
                measured="parent, analytic",
                absent="as `model_flops_per_step`",
            ),
            M(
                "achieved_flop_per_s",
                "FLOP/s",
                "`model_flops_per_step / step_time_s_median`",
                measured="parent",
                absent="as `model_flops_per_step`",
            ),
            M(
                "mfu_fraction",
                "fraction",
                "model FLOPs utilisation: `achieved_flop_per_s / mfu_peak_flop_per_s`",
                measured="parent",
                absent="absent when there is no peak (`mfu_unavailable_reason`)",
                better="higher",
                display="MFU",
            ),
            M(
                "mfu_peak_flop_per_s",
                "FLOP/s",
                (
                    "the peak MFU is taken against: the GPU's dense datasheet figure for the compute dtype"
                    " (`analysis.flops.GPU_PEAKS`), or on CPU the best of 1024-square `torch.mm` and"
                    " `F.linear` at the case's threads and compute dtype"
                ),
                measured=(
                    "parent; the CPU calibration is measured once per CPU / torch / dtype / threads and "
                    "cached under the harness cache (`calibration/`)"
                ),
                absent="as `mfu_fraction`",
            ),
            M(
                "mfu_peak_source",
                "text",
                (
                    "`table:<gpu>:<dtype>` or `calibrated:cpu:<dtype>`: where the peak came from, for the"
                    " dtype the matmuls run in"
                ),
                measured="parent",
                absent="as `mfu_fraction`",
            ),
            M(
                "flops_unavailable_reason",
                "text",
                "why there is no FLOP formula (a workload kind other than train / infer)",
                measured="parent",
                absent="absent when the FLOPs were computed",
            ),
            M(
                "mfu_unavailable_reason",
                "text",
                (
                    "why there is no MFU: no FLOP formula, no step time, a GPU not in the table or without"
                    " units for the dtype, or an exception of the calibration"
                ),
                measured="parent",
                absent="absent when `mfu_fraction` is there",
            ),
        ),
    ),
    Section(
        "Quality",
        intro=(
            (
                "`loss` is recorded during the steps. The held-out figures are computed after the "
                "timed steps (the `extras` phase) when `quality: true` (default), on the case's model "
                "as it stands then, inside the case's step contexts (autocast), without gradients, on "
                "`heldout_batches` batches of the case's shape from the corpus's held-out split (with "
                "`data: random` the figures are noise)."
            ),
        ),
        metrics=(
            M(
                "loss",
                "objective, list",
                (
                    "every step's training objective, warm-up steps first: mean next-token cross-entropy "
                    "(nats) for train; the mean forward loss for infer; for distill alpha·T²·KL + (1 - "
                    "alpha)·CE; plus any technique's penalty (L1). Multi-rank: the mean over ranks"
                ),
                measured="case process (memory pass), the value `session.step(i)` returns",
                absent="absent when the case failed before its first step, and for unsupported cases",
            ),
            M(
                "heldout_loss_nats",
                "nats",
                "mean next-token cross-entropy over every held-out token",
                measured="case process, `analysis.quality.heldout_loss`",
                absent="absent with `quality: false`; see `quality_unavailable_reason`",
                gate="quality",
                display="held-out loss",
            ),
            M(
                "perplexity",
                "1",
                "`exp(heldout_loss_nats)`",
                measured="case process",
                absent="as `heldout_loss_nats`",
                kind="quality",
            ),
            M(
                "kl_divergence_nats",
                "nats",
                (
                    "token-weighted mean of KL(reference ‖ case) over the held-out batches; the reference "
                    "is the same starting weights in fp32 with no technique"
                ),
                measured=(
                    "case process, `analysis.quality.compare_models`; for generate, per generated "
                    "position, teacher-forced on the fp32 run's greedy tokens (docs/generate.md)"
                ),
                absent="absent unless `workload_kind` is `infer` or `generate`",
                gate="quality",
                display="KL vs reference",
                fmt=".3g",
                column=9,
            ),
            M(
                "top1_agreement_fraction",
                "fraction",
                (
                    "fraction of held-out tokens whose most likely next token is the same under the case "
                    "and the reference"
                ),
                measured="case process, as above",
                absent="as `kl_divergence_nats`",
                kind="quality",
                better="higher",
                display="top-1 agreement",
            ),
            M(
                "quality_unavailable_reason",
                "text",
                "the exception that stopped the quality figures, `Type: message` (300 characters)",
                measured="case process",
                absent="absent when they were computed or not asked for",
            ),
            M(
                "heldout_loss_per_batch_nats",
                "nats, list",
                (
                    "each held-out batch's mean next-token cross-entropy: the unit the paired difference "
                    "and its bootstrap interval are computed over"
                ),
                measured="case process, `analysis.quality.heldout_loss`",
                absent="as `heldout_loss_nats`",
            ),
            M(
                "heldout_draw",
                "text",
                (
                    "what identifies the held-out batches (data, seed, batches, batch_size, seq_len): cases"
                    " are paired only on the same draw"
                ),
                measured="case process",
                absent="as `heldout_loss_nats`",
            ),
            M(
                "quality_start_weights",
                "text",
                "the weights the case started from: the trained reference (steps, seed) or a random init",
                measured="case process",
                absent="as `heldout_loss_nats`",
            ),
            M(
                "quality_finetune_step_count",
                "count",
                (
                    "training steps taken from the start weights before scoring (warm-up + measured), the "
                    "same seeded batches for every technique of a group"
                ),
                measured="case process",
                absent="absent for serving cases",
            ),
            M(
                "quality_delta_nats",
                "nats",
                (
                    "mean over the same held-out batches of (case - baseline) held-out loss; the baseline "
                    "is the group's baseline case (training) or the fp32 model of the same weights "
                    "(serving)"
                ),
                measured="parent (`analysis.pairing.quality_vs_baseline`) or case process",
                absent="absent for the baseline itself, without quality figures, or when the baseline failed",
            ),
            M(
                "quality_delta_ci_low_nats",
                "nats",
                (
                    "lower end of the 95 % percentile bootstrap interval (2000 resamples over batches) of "
                    "`quality_delta_nats`"
                ),
                measured="as `quality_delta_nats`",
                absent="as `quality_delta_nats`",
            ),
            M(
                "quality_delta_ci_high_nats",
                "nats",
                "upper end of that interval",
                measured="as `quality_delta_nats`",
                absent="as `quality_delta_nats`",
            ),
            M(
                "quality_ci_level_fraction",
                "fraction",
                "confidence level of the intervals (0.95)",
                measured="as `quality_delta_nats`",
                absent="as `quality_delta_nats`",
            ),
            M(
                "quality_change",
                "text",
                (
                    "`no measurable change` when the interval holds 0 (or one batch), else `higher` / "
                    "`lower`: show the label, do not rank by the number then"
                ),
                measured="as `quality_delta_nats`",
                absent="as `quality_delta_nats`",
            ),
            M(
                "quality_baseline",
                "text",
                "serving cases: what the paired difference is against",
                measured="case process",
                absent="absent for training cases",
            ),
            M(
                "quality_delta_unavailable_reason",
                "text",
                (
                    "why no paired difference: the baseline was scored on other held-out batches, or batch "
                    "counts differ"
                ),
                measured="parent",
                absent="absent when the difference was computed",
            ),
            M(
                "kl_divergence_ci_low_nats",
                "nats",
                (
                    "lower end of the bootstrap interval of `kl_divergence_nats` over held-out batches "
                    "(generate: over generated sequences)"
                ),
                measured="case process",
                absent="as `kl_divergence_nats`",
            ),
            M(
                "kl_divergence_ci_high_nats",
                "nats",
                "upper end of that interval",
                measured="case process",
                absent="as `kl_divergence_nats`",
            ),
            M(
                "top1_agreement_ci_low_fraction",
                "fraction",
                (
                    "lower end of the bootstrap interval of `top1_agreement_fraction` over held-out batches "
                    "(generate: over generated sequences)"
                ),
                measured="case process",
                absent="as `kl_divergence_nats`",
            ),
            M(
                "top1_agreement_ci_high_fraction",
                "fraction",
                "upper end of that interval",
                measured="case process",
                absent="as `kl_divergence_nats`",
            ),
        ),
    ),
    Section(
        "Generation (generate workload)",
        intro=(
            (
                "A generate step is one whole generation: a prefill over the prompt, then `new_tokens - 1` "
                "greedy decode forwards with a KV cache (docs/generate.md). Times come from the first "
                "timing pass when one ran, bytes from the memory pass."
            ),
        ),
        metrics=(
            M(
                "generate_prefill_time_s_median",
                "s",
                (
                    "the prefill forward over the prompt (cache filled, first new token), median over "
                    "measured steps"
                ),
                measured="case process, `workloads.generate`",
                absent="absent unless `workload_kind` is `generate`",
            ),
            M(
                "generate_decode_token_latency_s_median",
                "s",
                (
                    "one decode forward (one new token for the whole batch), median over every measured "
                    "decode token"
                ),
                measured="case process, `workloads.generate`",
                absent="as `generate_prefill_time_s_median`",
                display="decode latency per token",
                screen_unit="ms",
            ),
            M(
                "generate_decode_token_latency_s_iqr",
                "s",
                "inter-quartile range of the same per-token latencies",
                measured="case process",
                absent="as `generate_prefill_time_s_median`",
                screen_unit="ms",
            ),
            M(
                "generate_new_tokens_per_s",
                "1/s",
                (
                    "`batch_size * new_tokens / (prefill + sum of decode forwards)`, median over measured "
                    "steps: new tokens only"
                ),
                measured="case process",
                absent="as `generate_prefill_time_s_median`",
            ),
            M(
                "kv_cache_bytes",
                "bytes",
                (
                    "real storage of every K/V tensor the cache holds after the last token (each storage "
                    "once; a static cache's whole allocation; quantized codes and scales)"
                ),
                measured="case process, `models.kv_cache.storage_bytes`",
                absent="as `generate_prefill_time_s_median`",
                display="KV cache",
            ),
            M(
                "kv_cache_analytic_bytes",
                "bytes",
                (
                    "`2 * layers * kv_heads * head_dim * tokens_count * batch * element_bytes` of "
                    "`kv_cache_layout`"
                ),
                measured="case process, `models.kv_cache.analytic_bytes`",
                absent="as `generate_prefill_time_s_median`",
            ),
            M(
                "kv_cache_mismatch_reason",
                "text",
                (
                    "set when `kv_cache_bytes` and `kv_cache_analytic_bytes` differ by more than 1 %: the "
                    "cache holds other than its layout says (a library's cache that ignores a setting), so "
                    "neither figure should be read as the technique's"
                ),
                measured="case process",
                absent="`null` when the two agree; as `generate_prefill_time_s_median`",
            ),
            M("kv_cache_layout.layers", "setting", "decoder layers holding a cache", absent="as above"),
            M(
                "kv_cache_layout.kv_heads",
                "setting",
                "key/value heads per layer (after GQA)",
                absent="as above",
            ),
            M("kv_cache_layout.head_dim", "setting", "channels per head", absent="as above"),
            M("kv_cache_layout.batch", "setting", "sequences generated at once", absent="as above"),
            M(
                "kv_cache_layout.tokens_count",
                "count",
                "tokens the cache keeps at the end: `min(window, prompt_len + new_tokens - 1)`",
                absent="as above",
            ),
            M(
                "kv_cache_layout.element_bytes",
                "bytes",
                (
                    "stored bytes per K or V element: the dtype's width, or "
                    "`bits / 8 + dtype_bytes / group_size`"
                ),
                absent="as above",
            ),
            M("kv_cache_layout.storage", "text", "`dynamic` or `static`", absent="as above"),
            M("kv_cache_layout.window", "setting", "sliding window in tokens, or null", absent="as above"),
            M("kv_cache_layout.bits", "setting", "quantized width (8, 4), or null", absent="as above"),
            M(
                "generate_memory_by_length.tokens_count",
                "count, list",
                "tokens in context at each generated token of the last measured step (at most 512 points)",
                measured="case process",
                absent="as `generate_prefill_time_s_median`",
            ),
            M(
                "generate_memory_by_length.kv_cache_bytes",
                "bytes, list",
                "the cache's storage at that token",
                measured="case process",
                absent="as above",
            ),
            M(
                "generate_memory_by_length.host_rss_bytes",
                "bytes, list",
                "the case process's resident set at that token (`/proc/self/statm`; null off Linux)",
                measured="case process",
                absent="as above",
            ),
            M(
                "generate_memory_by_length.gpu_allocated_bytes",
                "bytes, list",
                "`torch.cuda.memory_allocated()` at that token",
                measured="case process",
                absent="absent off CUDA",
            ),
            M(
                "generate_memory_by_length.t_s",
                "s, list",
                "seconds since the step began, at that token",
                measured="case process",
                absent="as above",
            ),
            M(
                "predicted.kv_cache_bytes",
                "bytes",
                "the analytic KV cache of a generate case at full length, techniques applied",
                measured="parent, `analysis.predict.generate_prediction`",
                absent="absent unless `workload_kind` is `generate`",
            ),
            M(
                "kv_heads_count",
                "count",
                "key/value heads per layer after `grouped_query_attention` (the smallest over layers)",
                measured="case process, the technique's metrics",
                absent="absent without `grouped_query_attention`",
            ),
            M(
                "generate_unavailable_reason",
                "text",
                "why the generate figures are absent (no measured steps)",
                measured="case process",
                absent="absent when they were computed",
            ),
        ),
    ),
    Section(
        "Breakdown and prediction",
        intro=(
            (
                "The breakdown is one extra, untimed `session.step` (a training step, or a forward for"
                " inference; the last prepared batch; one untracked step first if the optimizer has no"
                " state yet) under `torch.distributed._tools.mem_tracker.MemTracker`, after the "
                "quality figures, when `breakdown: true` (default). It reads the category bytes at the"
                " step's tensor peak, on the device with the highest peak; a distill case's teacher is"
                " tracked too."
            ),
        ),
        metrics=(
            M(
                "breakdown.parameters_bytes",
                "bytes",
                "parameter tensors alive at the step's tensor peak",
                measured="case process, MemTracker `Parameter`",
                absent="absent with `breakdown: false`; see `breakdown_unavailable_reason`",
            ),
            M(
                "breakdown.buffers_bytes",
                "bytes",
                "module buffers at the peak",
                measured="MemTracker `Buffer`",
                absent="as above",
            ),
            M(
                "breakdown.gradients_bytes",
                "bytes",
                "parameter gradients at the peak",
                measured="MemTracker `Gradient`",
                absent="as above",
            ),
            M(
                "breakdown.optimizer_state_bytes",
                "bytes",
                "optimizer state at the peak",
                measured="MemTracker `Optstate`",
                absent="as above",
            ),
            M(
                "breakdown.activations_bytes",
                "bytes",
                "tensors made in forward (or recomputed by checkpointing) and alive at the peak",
                measured="MemTracker `Activation`",
                absent="as above",
            ),
            M(
                "breakdown.temporaries_bytes",
                "bytes",
                "tensors made in backward and alive at the peak",
                measured="MemTracker `Temp`",
                absent="as above",
            ),
            M(
                "breakdown.other_bytes",
                "bytes",
                "anything else alive at the peak (inputs, the loss, ...)",
                measured="MemTracker `Other`",
                absent="as above",
            ),
            M(
                "breakdown.tensor_peak_bytes",
                "bytes",
                "all tensor bytes alive at the peak of the one instrumented step (the sum of the categories)",
                measured="MemTracker `Total`",
                absent="as above",
                gate="memory",
                display="tensor peak",
            ),
            M(
                "breakdown_unavailable_reason",
                "text",
                "the exception that stopped the breakdown, `Type: message`",
                measured="case process",
                absent="absent when it ran or was not asked for",
            ),
            M(
                "predicted.parameters_bytes",
                "bytes",
                "analytic parameter bytes of the case's model",
                measured="case process, `analysis.predict.predict`",
                absent="absent when there is no prediction (`prediction_unavailable_reason`)",
            ),
            M(
                "predicted.optimizer_state_bytes",
                "bytes",
                "analytic default-AdamW state (two moments + one fp32 step per tensor); 0 for inference",
                measured="as above",
                absent="as above",
            ),
            M(
                "predicted.activations_bytes",
                "bytes",
                "analytic activation bytes alive at the predicted peak",
                measured="as above",
                absent="as above",
            ),
            M(
                "predicted.gradients_bytes",
                "bytes",
                "analytic gradient bytes alive at the predicted peak",
                measured="as above",
                absent="as above",
            ),
            M(
                "predicted.temporaries_bytes",
                "bytes",
                "analytic temporary bytes alive at the predicted peak",
                measured="as above",
                absent="as above",
            ),
            M(
                "predicted.tensor_peak_bytes",
                "bytes",
                "sum of the five predicted categories",
                measured="as above",
                absent="as above",
            ),
            M(
                "predicted.saved_activations_bytes",
                "bytes",
                "everything the forward keeps for backward, at the start of backward",
                measured="as above",
                absent="as above; absent for inference",
            ),
            M(
                "tensor_peak_measured_over_predicted",
                "ratio",
                "`breakdown.tensor_peak_bytes / predicted.tensor_peak_bytes`",
                measured="case process",
                absent="absent unless both exist",
                rename="tensor_peak_measured_over_predicted_ratio",
            ),
            M(
                "prediction_unavailable_reason",
                "text",
                (
                    "why there is no prediction: a technique without a rule (its `adjust_prediction`), a"
                    " workload kind without a formula, a measured/predicted tensor peak outside (0.2, 5),"
                    " or an exception"
                ),
                measured="case process",
                absent="absent when `predicted.*` are there",
            ),
        ),
    ),
    Section(
        "Exactness",
        intro=(
            (
                "For a case whose techniques all declare themselves exact (`exact = True`: "
                "checkpointing, offloading, accumulation, SDPA, chunked cross-entropy, ZeRO-1, ...), "
                "compared with the baseline record of the same run (or an earlier record in a resumed "
                "run) whose spec differs only in techniques and run settings."
            ),
        ),
        metrics=(
            M(
                "loss_max_rel_diff_vs_baseline",
                "ratio",
                (
                    "max over all steps (warm-up included) of |loss - baseline loss| / max(|baseline "
                    "loss|, 1e-12)"
                ),
                measured="parent, `runner.exactness.check`, after the case",
                absent=(
                    "absent unless every technique is exact, both records are `ok` and have the same "
                    "number of losses"
                ),
                display="max loss rel. diff vs baseline",
                rename="loss_max_rel_diff_vs_baseline_ratio",
            ),
            M(
                "exact_rtol",
                "ratio",
                (
                    "the tolerance: the largest `exact_rtol` of the case's techniques (1e-5 by default, "
                    "1e-4 for SDPA)"
                ),
                measured="parent",
                absent="as above",
                rename="exact_rtol_ratio",
            ),
            M(
                "exactness",
                "text",
                "`ok` (drift within `exact_rtol`) or `drift`",
                measured="parent",
                absent="as above",
                display="exactness",
                column=10,
            ),
            M(
                "negative_saving_flag",
                "text",
                (
                    "why the case's `breakdown.tensor_peak_bytes` cannot be right: above the baseline's by"
                    " more than max(1 MiB, 0.5 %) for techniques that keep the math"
                ),
                measured="parent, `runner.exactness.check`",
                absent="absent unless that happened (and when either tensor peak is missing)",
            ),
            M(
                "baseline_differences",
                "list of text",
                (
                    "what differs from the baseline besides the technique (ranks, global batch, per-rank "
                    "batch, host memory scope)"
                ),
                measured="parent, `analysis.pairing.baseline_differences`",
                absent="absent for the baseline itself and when there is no baseline record",
            ),
            M(
                "baseline_ratios_comparable",
                "bool",
                "true when nothing but the technique differs: ratios to the baseline are the technique's",
                measured="parent",
                absent="as `baseline_differences`",
            ),
            M(
                "baseline_ratio_null_reason",
                "text",
                "why ratios to the baseline must be shown as null",
                measured="parent",
                absent="absent when `baseline_ratios_comparable`",
            ),
        ),
    ),
    Section(
        "Multi-rank (ZeRO-1, FSDP2)",
        intro=(
            (
                "The ranks run under torchrun and measure themselves exactly as the parent measures a "
                "single case process (VmHWM read and reset at each phase boundary, torch CUDA peaks "
                "read and reset). The record's host and GPU figures are replaced by the maximum over "
                "ranks; the case process (the launcher) keeps its own as `launcher_*`. Losses are the "
                "mean over ranks; model figures are rank 0's. Ranks do not run the `extras` phase: "
                "multi-rank records carry no quality, breakdown or prediction figures."
            ),
        ),
        metrics=(
            M(
                "world_size",
                "integer",
                "number of ranks",
                measured="launcher (`ranks.merge`)",
                absent="absent for single-process cases",
                rename="rank_count",
            ),
            M(
                "ranks",
                "list of objects",
                "one object per rank that wrote a result (keys below)",
                measured="launcher",
                absent="absent for single-process cases",
            ),
            M(
                "ranks_dir",
                "path",
                "where the ranks' own result files were kept (only when the case failed)",
                measured="launcher",
                absent="absent unless a multi-rank case failed",
            ),
            M(
                "rank_host_rss_base_bytes_max",
                "bytes",
                "max over ranks of `ranks[].host_rss_base_bytes`",
                measured="launcher, `ranks._maxima`",
                absent="`null` when no rank has the figure; absent for single-process cases",
            ),
            M(
                "rank_host_rss_peak_bytes_max",
                "bytes",
                "max over ranks of `ranks[].host_rss_peak_bytes`",
                measured="as above",
                absent="as above",
            ),
            M(
                "rank_host_rss_peak_above_base_bytes_max",
                "bytes",
                "max over ranks of `ranks[].host_rss_peak_above_base_bytes`",
                measured="as above",
                absent="as above",
            ),
            M(
                "rank_gpu_peak_allocated_bytes_max",
                "bytes",
                "max over ranks of `ranks[].gpu_peak_allocated_bytes`",
                measured="as above",
                absent="as above (always `null` on CPU)",
            ),
            M(
                "rank_gpu_peak_reserved_bytes_max",
                "bytes",
                "max over ranks of `ranks[].gpu_peak_reserved_bytes`",
                measured="as above",
                absent="as above (always `null` on CPU)",
            ),
            M(
                "rank_param_bytes_local_max",
                "bytes",
                "max over ranks of `ranks[].param_bytes_local`",
                measured="as above",
                absent="as above",
                rename="local_param_bytes",
            ),
            M(
                "rank_optimizer_state_bytes_max",
                "bytes",
                "max over ranks of `ranks[].optimizer_state_bytes`",
                measured="as above",
                absent="as above",
            ),
            M(
                "launcher_host_rss_base_bytes",
                "bytes",
                "the launcher's own `host_rss_base_bytes`",
                measured="parent, as for a single process",
                absent="absent for single-process cases",
            ),
            M(
                "launcher_host_rss_peak_bytes",
                "bytes",
                "the launcher's own `host_rss_peak_bytes`",
                measured="parent",
                absent="as above",
            ),
            M(
                "launcher_host_rss_peak_above_base_bytes",
                "bytes",
                "the launcher's own `host_rss_peak_above_base_bytes`",
                measured="parent",
                absent="as above",
            ),
            M(
                "launcher_host_rss_sampled_peak_bytes",
                "bytes",
                "the launcher's own `host_rss_sampled_peak_bytes`",
                measured="parent",
                absent="as above",
            ),
            M(
                "launcher_gpu_peak_allocated_bytes",
                "bytes",
                "the launcher's own `gpu_peak_allocated_bytes` (`null`: it trains nothing)",
                measured="parent",
                absent="as above",
            ),
            M(
                "launcher_gpu_peak_reserved_bytes",
                "bytes",
                "the launcher's own `gpu_peak_reserved_bytes`",
                measured="parent",
                absent="as above",
            ),
            M("ranks[].rank", "integer", "the rank's index", measured="rank", absent="never"),
            M("ranks[].status", "text", "the rank's own status", measured="rank", absent="never"),
            M(
                "ranks[].error",
                "text",
                "the rank's one-line error",
                measured="rank",
                absent="absent when the rank ended ok",
            ),
            M(
                "ranks[].device",
                "text",
                "`cpu` or `cuda:<local rank>`",
                measured="rank",
                absent="absent when the rank failed before it was set",
            ),
            M(
                "ranks[].threads",
                "integer",
                "the rank's torch intra-op threads",
                measured="rank",
                absent="never",
                rename="torch_thread_count",
            ),
            M(
                "ranks[].host_peak_method",
                "text",
                "`vmhwm`, or `none` where `/proc` is missing",
                measured="rank",
                absent="never",
            ),
            M(
                "ranks[].host_rss_base_bytes",
                "bytes",
                "the rank's RSS at the start of its `build` phase",
                measured="rank, `/proc/self/statm`",
                absent="`null` before the rank reached `imported`",
            ),
            M(
                "ranks[].host_rss_peak_bytes",
                "bytes",
                "highest of the rank's VmHWM over `build`, `warmup`, `measured`",
                measured="rank, `/proc/self/status`, reset through `/proc/self/clear_refs`",
                absent="`null` when no peak phase was measured or one of them has no VmHWM",
            ),
            M(
                "ranks[].host_rss_peak_above_base_bytes",
                "bytes",
                "`host_rss_peak_bytes - host_rss_base_bytes` of the rank",
                measured="rank",
                absent="`null` when either operand is",
            ),
            M(
                "ranks[].gpu_peak_allocated_bytes",
                "bytes",
                "torch's `max_memory_allocated()` over `build` + `warmup` + `measured`",
                measured="rank",
                absent="`null` off CUDA",
            ),
            M(
                "ranks[].gpu_peak_reserved_bytes",
                "bytes",
                "torch's `max_memory_reserved()` likewise",
                measured="rank",
                absent="`null` off CUDA",
            ),
            M(
                "ranks[].param_bytes_local",
                "bytes",
                "parameter bytes this rank holds (a DTensor's local shard)",
                measured="rank, after the measured steps",
                absent="absent when the rank failed before",
                rename="local_param_bytes",
            ),
            M(
                "ranks[].optimizer_state_bytes",
                "bytes",
                "optimizer state bytes this rank holds (ZeroRedundancyOptimizer: its shard)",
                measured="rank, after the measured steps",
                absent="absent when the rank failed before, or without an optimizer",
            ),
            M(
                "ranks[].phases.<phase>.host_rss_start_bytes",
                "bytes",
                "the rank's RSS when the phase began",
                measured="rank",
                absent="`null` for `startup`",
            ),
            M(
                "ranks[].phases.<phase>.host_rss_peak_bytes",
                "bytes",
                "the rank's VmHWM over the phase",
                measured="rank",
                absent="`null` without `/proc`",
            ),
            M(
                "ranks[].phases.<phase>.host_rss_end_bytes",
                "bytes",
                "the rank's RSS at rest right after the phase",
                measured="rank, `/proc/self/statm` (psutil without `/proc`)",
                absent="never",
            ),
            M(
                "ranks[].phases.<phase>.duration_s",
                "s",
                "the rank's monotonic time over the phase",
                measured="rank",
                absent="never",
            ),
            M(
                "ranks[].phases.<phase>.gpu_peak_allocated_bytes",
                "bytes",
                "torch's `max_memory_allocated()` over the phase",
                measured="rank",
                absent="absent off CUDA",
            ),
            M(
                "ranks[].phases.<phase>.gpu_peak_reserved_bytes",
                "bytes",
                "torch's `max_memory_reserved()` over the phase",
                measured="rank",
                absent="absent off CUDA",
            ),
            M(
                "ranks[].step_time_s",
                "s, list",
                "the rank's own measured step times",
                measured="rank, `perf_counter`",
                absent="absent when the rank failed before its first step",
            ),
        ),
    ),
    Section(
        "Technique-specific",
        intro=(
            (
                "Each technique's `metrics(model)` runs in the case process (or rank 0) after the "
                "measured steps, on the model as it stands then. Techniques are asked in composition "
                "order and a later one's key replaces an earlier one's (`unstructured_pruning` returns"
                " nothing once a quantizer replaced its layers). Absent unless the case uses a "
                "technique that writes the key."
            ),
        ),
        metrics=(
            M(
                "sparsity_fraction",
                "fraction",
                ("`unstructured_pruning`: zero weights / targeted weights, over the targeted Linear layers"),
                measured="case process, after the steps",
                absent="absent without `unstructured_pruning` or when no targeted layer is left",
            ),
            M(
                "pruned_weight_count",
                "count",
                "`unstructured_pruning`: zero weights in the targeted layers",
                measured="as above",
                absent="as above",
            ),
            M(
                "targeted_weight_count",
                "count",
                "`unstructured_pruning`: weights of the targeted layers (out x in each)",
                measured="as above",
                absent="as above",
            ),
            M(
                "sparse_layer_count",
                "count",
                (
                    "`unstructured_pruning`: layers stored as CSR (`storage: sparse`, where smaller than "
                    "dense)"
                ),
                measured="as above",
                absent="as above",
            ),
            M(
                "weight_storage_bytes",
                "bytes",
                (
                    "bytes the affected layers' weights take as stored. `unstructured_pruning`: CSR "
                    "arrays, or weight + weight_orig + weight_mask under masks, or the dense weight; "
                    "`weight_only_quantization`: quantized data + scales / quant state of the quantized "
                    "layers; `dynamic_int8`: packed int8 weights with their scales and zero points; "
                    "`fake_quantization`: the fake-quantized weights (full precision)"
                ),
                measured="as above",
                absent="absent without one of these techniques",
            ),
            M(
                "dense_weight_bytes",
                "bytes",
                (
                    "the same layers' weights stored dense in the model's dtype (`weight_storage_bytes`' "
                    "reference)"
                ),
                measured="as above",
                absent="absent without `unstructured_pruning`, `weight_only_quantization` or `dynamic_int8`",
            ),
            M(
                "packed_weight_bytes",
                "bytes",
                (
                    "`fake_quantization`: bytes the targeted weights would take packed at `bits` per "
                    "value, plus one fp32 scale per tensor (or row)"
                ),
                measured="as above",
                absent="absent without `fake_quantization`",
            ),
            M(
                "max_distinct_values",
                "count",
                (
                    "`fake_quantization`: the most distinct values in one targeted weight tensor (or row, "
                    "per channel): at most 2^bits - 1"
                ),
                measured="as above",
                absent="as above",
                rename="max_distinct_value_count",
            ),
            M(
                "quantized_layer_count",
                "count",
                "`weight_only_quantization` / `dynamic_int8`: Linear layers replaced by quantized ones",
                measured="as above",
                absent="absent without these techniques",
            ),
            M(
                "technique_note",
                "text",
                (
                    "what a technique did not do that a reader would assume it did, e.g. layers "
                    "`weight_only_quantization` kept in full precision (bitsandbytes' CPU 4-bit kernel "
                    "needs in_features % blocksize == 0 and out_features % 32 == 0); shown in the tables' "
                    "note column"
                ),
                measured="case process, the technique's `metrics`",
                absent="absent when the technique did all it was asked",
            ),
            M(
                "unquantized_layer_count",
                "count",
                (
                    "`weight_only_quantization`: targeted Linear layers left in full precision (e.g. "
                    "trainable ones, or widths the 4-bit CPU kernel cannot take)"
                ),
                measured="as above",
                absent="absent without `weight_only_quantization`",
            ),
            M(
                "l1_norm",
                "weight units",
                "`l1_regularization`: sum of |w| over the targeted Linear weights",
                measured="as above",
                absent="absent without `l1_regularization`",
            ),
            M(
                "l1_sparsity_fraction",
                "fraction",
                (
                    "`l1_regularization`: fraction of the targeted weights with |w| below "
                    "`l1_sparsity_threshold`"
                ),
                measured="as above",
                absent="as above",
            ),
            M(
                "l1_sparsity_threshold",
                "weight units",
                "`l1_regularization`: the configured `threshold`",
                measured="as above",
                absent="as above",
            ),
            M(
                "heads_kept_total",
                "count",
                "`structured_pruning`: attention heads left, over all layers",
                measured="as above",
                absent="absent without `structured_pruning`",
                rename="kept_head_count",
            ),
            M(
                "ffn_neurons_kept_total",
                "count",
                "`structured_pruning`: FFN hidden units left, over all layers",
                measured="as above",
                absent="as above",
                rename="kept_ffn_neuron_count",
            ),
        ),
    ),
    Section(
        "Workload-specific: distill",
        intro=("From `DistillSession.extra_metrics()`, in the case process after the measured steps.",),
        metrics=(
            M(
                "teacher_param_count",
                "count",
                "elements of the frozen teacher's parameters (tied tensors once)",
                measured="case process, after the steps",
                absent="absent unless `workload_kind` is `distill`",
            ),
            M(
                "teacher_param_bytes",
                "bytes",
                "bytes of the same, in `teacher_dtype`",
                measured="as above",
                absent="as above",
            ),
            M(
                "teacher_logits_bytes",
                "bytes",
                (
                    "the largest teacher logits tensor of one micro-batch (b·s·V in `teacher_dtype`), held"
                    " until the loss"
                ),
                measured="case process, during the steps",
                absent="as above",
            ),
            M(
                "teacher_forward_peak_bytes",
                "bytes",
                (
                    "tensor bytes alive at the peak of one teacher forward on one micro-batch (logits "
                    "included): what distillation adds on top of the student's step"
                ),
                measured=(
                    "case process, one untimed forward under a `TorchDispatchMode` that tracks live storages"
                ),
                absent="as above",
            ),
            M(
                "student_ce_loss",
                "nats, list",
                "per step (warm-up first), the student's hard-label cross-entropy",
                measured="case process, during the steps",
                absent="as above",
                rename="student_ce_loss_nats",
            ),
            M(
                "soft_kl_loss",
                "nats, list",
                (
                    "per step, KL(softmax(z_t/T) ‖ softmax(z_s/T)) averaged over positions, before the T² "
                    "factor"
                ),
                measured="case process, during the steps",
                absent="as above",
                rename="soft_kl_loss_nats",
            ),
        ),
    ),
    Section(
        "Artefacts",
        outro=(
            (
                "The case directory also keeps `case.json` (the case definition), `out-memory.json` / "
                "`out-timing.json` (the case processes' raw results) and `stderr-memory.txt` / "
                "`stderr-timing.txt`; the record names none of them."
            ),
        ),
        metrics=(
            M(
                "timeline_file",
                "path",
                ("`cases/<case_id>/timeline.json`, relative to the run directory: the memory pass's samples"),
                measured="parent",
                absent="absent for unsupported cases",
            ),
        ),
    ),
    Section(
        "Profile (`harness run --profile memray`)",
        level=3,
        intro=(
            (
                "After the memory and timing passes of a case that ended `ok`, the parent runs one "
                "more case process, the *profile pass* (its files under `cases/<case_id>/profile/`), "
                "with `breakdown` and `quality` off and the system allocator. memray's `Tracker` "
                "(native traces; on CUDA also torch's allocator history) records from the start of "
                "`build` to the end of `measured`. The profile never changes the case's status or its "
                "measured figures. Absent without `--profile`, and for cases that did not end `ok`."
            ),
        ),
        metrics=(
            M(
                "profile",
                "text",
                "the profiler asked for: `memray`",
                measured="parent",
                absent="absent without `--profile` or when the case did not end `ok`",
            ),
            M(
                "profile_unavailable_reason",
                "text",
                (
                    "why there is no profile: memray not installed, a multi-rank case, the profile pass "
                    "failed, or the rendering raised"
                ),
                measured="parent, `runner.profile.profile_case`",
                absent="`null` when the profile was made",
            ),
            M(
                "profile_wall_time_s",
                "s",
                (
                    "the profile pass and the flame graph's rendering, on the parent's monotonic clock, "
                    "rounded to 1 ms"
                ),
                measured="parent",
                absent="absent when the profile was refused before it started",
            ),
            M(
                "memray_peak_memory_bytes",
                "bytes",
                (
                    "memray's high-water mark of heap bytes live (malloc and kin, not RSS) from `build` to"
                    " the end of `measured`"
                ),
                measured=(
                    "profile pass (memray `Tracker`); read by the parent from the capture's metadata "
                    "(`FileReader.metadata.peak_memory`)"
                ),
                absent="absent unless the profile was made",
            ),
            M(
                "memray_total_allocations",
                "count",
                "allocations memray recorded over the same span",
                measured="as above (`metadata.total_allocations`)",
                absent="as above",
                rename="memray_allocation_count",
            ),
            M(
                "memray_capture_bytes",
                "bytes",
                "size of the capture file `memray.bin`",
                measured="parent, `stat`",
                absent="as above",
            ),
            M(
                "artifacts.memray_flamegraph",
                "path",
                (
                    "`memray-flamegraph.html`, relative to the run directory: memray's flame graph of the "
                    "allocations live at the high-water mark, one offline file"
                ),
                measured="parent, `python -m memray flamegraph`",
                absent="absent unless the profile was made",
            ),
            M(
                "artifacts.memray_capture",
                "path",
                "`memray.bin`, memray's capture (open it with any `memray` reporter)",
                measured="profile pass",
                absent="as above",
            ),
            M(
                "artifacts.torch_memory_snapshot",
                "path",
                ("`torch-memory-snapshot.pickle`: `torch.cuda.memory._snapshot()` at the end of `measured`"),
                measured="profile pass",
                absent="absent off CUDA",
            ),
            M(
                "artifacts.torch_memory_timeline",
                "path",
                (
                    "`torch-memory-timeline.html`: torch's allocation timeline of the snapshot (loads "
                    "MemoryViz.js from a CDN when opened)"
                ),
                measured="profile pass",
                absent="absent off CUDA",
            ),
        ),
    ),
    Section(
        "The timeline file (`timeline.json`)",
        level=3,
        scope="timeline",
        metrics=(
            M(
                "t_s",
                "s, list",
                "sample times since the parent started the memory pass's case process",
                measured="parent sampler, `time.monotonic()`",
                absent="never",
            ),
            M(
                "host_rss_bytes",
                "bytes, list",
                "RSS at each sample (max-preserving downsampled to 4000 points)",
                measured="parent sampler, `/proc/<pid>/statm`",
                absent="never",
            ),
            M(
                "gpu_process_bytes",
                "bytes, list",
                "NVML process memory at each sample",
                measured="parent sampler",
                absent="`null` without NVML",
            ),
            M(
                "gpu_device_bytes",
                "bytes, list",
                "NVML device memory at each sample",
                measured="parent sampler",
                absent="`null` without NVML",
            ),
            M(
                "phases",
                "list of objects",
                "`{name, t_start_s, t_end_s}` per phase, on the same clock as `t_s`",
                measured="parent",
                absent="never",
            ),
        ),
    ),
    Section(
        "Run manifest (`manifest.json`)",
        scope="manifest",
        intro=("One per run, written when it starts and updated when it ends or resumes.",),
        metrics=(
            M("run_id", "text", "the run directory's name", measured="parent", absent="never"),
            M("suite_path", "path", "the suite file as given", measured="parent", absent="never"),
            M("suite_name", "text", "the suite's name", measured="parent", absent="never"),
            M("suite_sha256", "text", "sha256 of the suite file's bytes", measured="parent", absent="never"),
            M("case_count", "count", "cases the suite expands to", measured="parent", absent="never"),
            M(
                "started_at",
                "timestamp",
                "when the run started (ISO-8601 UTC)",
                measured="parent",
                absent="never",
            ),
            M(
                "ended_at",
                "timestamp",
                "when the last case finished",
                measured="parent",
                absent="`null` while running, after a kill, and while a resumed run runs",
            ),
            M(
                "resumed_at",
                "timestamp",
                "when `--resume` last continued the run",
                measured="parent",
                absent="absent unless resumed",
            ),
            M(
                "git_commit",
                "text",
                "`git rev-parse HEAD` of the harness checkout",
                measured="parent, `git`",
                absent="`null` outside a git checkout",
            ),
            M(
                "git_dirty",
                "bool",
                "whether `git status --porcelain` lists changes",
                measured="parent, `git`",
                absent="`null` outside a git checkout",
            ),
            M("harness_version", "text", "`harness.__version__`", measured="parent", absent="never"),
            M("torch_version", "text", "`torch.__version__`", measured="parent", absent="never"),
            M("python_version", "text", "`platform.python_version()`", measured="parent", absent="never"),
            M("python_executable", "path", "`sys.executable`", measured="parent", absent="never"),
            M("platform", "text", "`platform.platform()`", measured="parent", absent="never"),
            M(
                "cpu_model",
                "text",
                "`model name` of `/proc/cpuinfo` (or `platform.processor()`)",
                measured="parent",
                absent="never",
            ),
            M(
                "cpu_isa",
                "text",
                "the `/proc/cpuinfo` instruction-set flags that change torch's kernels (avx2, avx512*, "
                "amx*, *bf16*, fma, f16c; asimd/sve on Arm), sorted; `compare` treats a difference as a "
                "changed environment for quality, memory and time",
                measured="parent",
                absent="`null` without `/proc/cpuinfo`; `none` when the CPU has none of them",
            ),
            M(
                "cpu_microarch",
                "text",
                "vendor, family, model and stepping of `/proc/cpuinfo` (one model name covers several)",
                measured="parent",
                absent="never (`platform.machine()` without `/proc/cpuinfo`)",
            ),
            M(
                "torch_build",
                "text",
                "torch version, source commit, CUDA version and the CPU capability torch dispatches to "
                "(`torch.backends.cpu.get_cpu_capability()`)",
                measured="parent",
                absent="never",
            ),
            M("cpu_count", "count", "`os.cpu_count()`", measured="parent", absent="never"),
            M("cuda_available", "bool", "`torch.cuda.is_available()`", measured="parent", absent="never"),
            M(
                "cuda_version",
                "text",
                "`torch.version.cuda`",
                measured="parent",
                absent="`null` on a CPU build of torch",
            ),
            M(
                "gpu_names",
                "list of text",
                "NVML device names",
                measured="parent, NVML",
                absent="`[]` without NVML",
            ),
            M(
                "gpu_driver_version",
                "text",
                "NVML driver version",
                measured="parent, NVML",
                absent="`null` without NVML",
            ),
            M("host", "text", "`socket.gethostname()`", measured="parent", absent="never"),
            M(
                "executor",
                "text",
                "where the cases ran: `local`, `ray` or `slurm` (each record's `node` says which machine)",
                measured="parent",
                absent="absent in runs made before executors",
            ),
            M(
                "<when>_loadavg_1m",
                "1",
                "the 1-minute load average at the run's `start` and `end`",
                measured="parent, `os.getloadavg()`",
                absent="never",
            ),
            M(
                "<when>_loadavg_5m",
                "1",
                "the 5-minute load average, likewise",
                measured="parent",
                absent="never",
            ),
            M(
                "<when>_loadavg_15m",
                "1",
                "the 15-minute load average, likewise",
                measured="parent",
                absent="never",
            ),
            M(
                "<when>_cpu_count",
                "count",
                "`os.cpu_count()` at the run's `start` and `end`",
                measured="parent",
                absent="never",
            ),
            M(
                "<when>_psi_cpu",
                "text",
                "the `some` line of `/proc/pressure/cpu` at the run's `start` and `end`",
                measured="parent",
                absent="`null` without PSI",
            ),
        ),
    ),
    Section(
        "Derived in reports",
        scope="derived",
        intro=(
            "Not written to the record: `harness report`, the terminal summary and `harness compare` "
            "compute these from it. Ratios and differences are taken against the case's baseline "
            "(`harness.case.baseline_key`: same definition, no techniques, same run).",
            "**The headline memory figure** depends on the device and is always shown with its "
            "process-level partner, labelled: on CPU the tensor peak is `breakdown.tensor_peak_bytes` "
            "(deterministic run to run; what the CI gate judges) and the process peak is "
            "`host_rss_peak_above_base_bytes`; on CUDA the tensor peak is `gpu_peak_allocated_bytes` "
            "and the process peak `gpu_peak_reserved_bytes`. The compare policy "
            "(results/baselines/policy.yaml) decides which of them is gated; the report marks it.",
        ),
        metrics=(
            M(
                "final_loss",
                "objective",
                "the last entry of `loss`",
                measured="report / compare",
                absent=("absent when `loss` is empty"),
                gate="quality",
                display="final loss",
            ),
            M(
                "tensor_peak_bytes",
                "bytes",
                (
                    "the headline tensor figure: `breakdown.tensor_peak_bytes` on CPU (null with "
                    "`breakdown: false`); `gpu_peak_allocated_bytes` on CUDA, else "
                    "`breakdown.tensor_peak_bytes`"
                ),
                measured="report, `harness.metrics.Record.tensor_peak` / `.process_peak`",
                absent=("`null` with `breakdown: false` on CPU, and for cases that did not end ok"),
                display="tensor peak",
                column=1,
            ),
            M(
                "process_peak_bytes",
                "bytes",
                (
                    "the headline process figure: `host_rss_peak_above_base_bytes` on CPU, "
                    "`gpu_peak_reserved_bytes` on CUDA"
                ),
                measured="report, `harness.metrics.Record.tensor_peak` / `.process_peak`",
                absent="`null` for cases that did not end ok",
                display=("process peak"),
                column=3,
            ),
            M(
                "tensor_peak_ratio",
                "ratio",
                "`tensor_peak_bytes` / the baseline's, when both measured the same figure",
                measured=("report"),
                absent="`null` without an ok baseline",
                display="tensor peak / baseline",
                fmt=".2f",
                column=2,
            ),
            M(
                "process_peak_ratio",
                "ratio",
                "`process_peak_bytes` / the baseline's",
                measured="report",
                absent=("as `tensor_peak_ratio`"),
                display="process peak / baseline",
                fmt=".2f",
                column=4,
            ),
            M(
                "step_time_ratio",
                "ratio",
                "`step_time_s_median` / the baseline's",
                measured="report",
                absent=("as `tensor_peak_ratio`"),
                display="step time / baseline",
                fmt=".2f",
                column=6,
            ),
            M(
                "quality",
                "objective",
                (
                    "the case's quality figure: `heldout_loss_nats`, else `kl_divergence_nats`, else "
                    "`final_loss` (`quality_metric` names which)"
                ),
                measured="report",
                absent="`null` when none of them was measured",
                display="quality",
                screen_unit="nats",
                fmt=".4f",
            ),
            M(
                "quality_delta",
                "objective",
                (
                    "`quality` minus the baseline's (same figure on both sides); inside `quality_noise` it "
                    "is shown as no change"
                ),
                measured="report",
                absent="as `tensor_peak_ratio`",
                display="quality change",
                screen_unit="nats",
                fmt="+.2g",
                column=8,
            ),
            M(
                "quality_noise",
                "objective",
                (
                    "the band within which a quality change is noise: the quality gate's tolerance, "
                    "max(abs_tol, rel x |baseline|)"
                ),
                measured="report, from the compare policy's defaults",
                absent="as `quality_delta`",
                better="none",
                screen_unit="nats",
            ),
        ),
    ),
)

# Accepted exceptions to the unit convention: the unit is not one a suffix can name.
UNIT_EXCEPTIONS: dict[str, str] = {
    "loss": "the objective's own unit: nats for plain cross-entropy, more terms under L1 or distill",
    "perplexity": "dimensionless by definition",
    "l1_norm": "in the weights' own units",
    "l1_sparsity_threshold": "in the weights' own units (a configured threshold)",
    "final_loss": "the objective's own unit, as `loss`",
    "quality": "the unit of the figure it takes (`quality_metric`): nats, or the objective's",
    "quality_delta": "as `quality`",
    "quality_noise": "as `quality`",
    "timing_loadavg_1m_max": "the kernel's load average: runnable tasks, averaged",
    "<when>_loadavg_1m": "the kernel's load average: runnable tasks, averaged",
    "<when>_loadavg_5m": "the kernel's load average: runnable tasks, averaged",
    "<when>_loadavg_15m": "the kernel's load average: runnable tasks, averaged",
}
# Numbers that label or configure a case rather than measure it: no unit to carry.
NUMERIC_LABELS = frozenset({"record_version", "batch_size", "seq_len", "exit_code", "ranks[].rank"})

# The headline memory figures per device: (tensor figure candidates, process figure candidates), first
# present wins. See the "Derived in reports" section.
HEADLINE_MEMORY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cpu": (("breakdown.tensor_peak_bytes",), ("host_rss_peak_above_base_bytes",)),
    "cuda": (
        ("gpu_peak_allocated_bytes", "breakdown.tensor_peak_bytes"),
        ("gpu_peak_reserved_bytes",),
    ),
}
# Quality in order of preference: a held-out figure beats the training loss when the case recorded one.
QUALITY_ORDER: tuple[str, ...] = ("heldout_loss_nats", "kl_divergence_nats", "final_loss")
