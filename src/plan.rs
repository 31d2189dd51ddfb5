//! Plans: ordered lists of ready-made dispatches (pipeline, bind group, grid), built once by the
//! kernel wrappers and recorded as often as needed, many times into one compute pass; running them
//! and timing them on the device. Nothing in a plan reads back.

use crate::device::Gpu;
use crate::error::{Result, WgnnError};

/// One kernel launch, ready to record: pipeline, bind group (holding its buffers) and grid.
/// Cloning shares the same GPU objects.
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// The storage buffers it binds, held (so that no identity is reused while the plan lives:
    /// a wrapper's scratch tensor may be dropped once its dispatch is built).
    pub(crate) buffers: Vec<std::sync::Arc<wgpu::Buffer>>,
    /// Set once its pipeline has been recorded into a pass (shared by every dispatch of that
    /// pipeline): a driver may compile a pipeline at its first run (llvmpipe does), so a first run
    /// is no timing of the kernel.
    pub(crate) pipeline_ran: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Dispatch {
    /// The storage buffers it binds: (identity, bytes), the identity stable while the plan lives.
    pub(crate) fn bound(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buffers.iter().map(|b| (std::sync::Arc::as_ptr(b) as usize, b.size()))
    }

    /// Whether its pipeline has been recorded into a pass before.
    pub(crate) fn pipeline_ran(&self) -> bool {
        self.pipeline_ran.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// An ordered list of dispatches: a kernel call, a training step, or a whole epoch.
#[derive(Default)]
pub struct Plan {
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
    pub fn extend(&mut self, other: Plan) {
        self.dispatches.extend(other.dispatches);
    }
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
    /// Records every dispatch into `pass`, in order. wgpu orders storage writes between
    /// dispatches of one pass, so each sees the results of those before it.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
            d.pipeline_ran.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl From<Dispatch> for Plan {
    fn from(d: Dispatch) -> Plan {
        Plan { dispatches: vec![d] }
    }
}

impl Gpu {
    /// Encodes `plans` in order into one command encoder and one compute pass, and submits it.
    /// Does not wait: a later download (or [`Gpu::wait`]) does.
    pub fn run(&self, plans: &[&Plan]) -> Result<()> {
        self.run_repeated(plans, 1)
    }

    /// Like [`Gpu::run`], recording the sequence `times` times into the same pass.
    pub fn run_repeated(&self, plans: &[&Plan], times: usize) -> Result<()> {
        let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgnn") });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("wgnn"), timestamp_writes: None });
            for _ in 0..times {
                for plan in plans {
                    plan.record(&mut pass);
                }
            }
        }
        self.submit("run", encoder.finish())?;
        Ok(())
    }

    /// Wall seconds per execution of `plan` with `reps` executions recorded into one submission
    /// and waited for once (after one untimed execution, so that no pipeline compiles inside):
    /// the device time of [`Gpu::time_plan`] plus whatever the host and the driver add around
    /// it (recording, submission, idle time between dispatches).
    pub fn wall_per_run(&self, plan: &Plan, reps: usize) -> Result<f64> {
        self.run(&[plan])?;
        self.wait()?;
        let started = std::time::Instant::now();
        self.run_repeated(&[plan], reps.max(1))?;
        self.wait()?;
        Ok(started.elapsed().as_secs_f64() / reps.max(1) as f64)
    }
}

impl Gpu {
    /// Device seconds of each of `reps` executions of `plan`, read from timestamp queries written
    /// at the start and end of a compute pass per execution (the plan's dispatches and nothing
    /// else). Needs `Features::TIMESTAMP_QUERY` ([`Gpu::new`] requests it where the adapter has it).
    pub fn time_plan(&self, plan: &Plan, reps: usize) -> Result<Vec<f64>> {
        const OP: &str = "time_plan";
        TimedPasses::require(self, OP)?;
        // Two queries per repetition, at most wgpu::QUERY_SET_MAX_QUERIES per set.
        let per_set = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;
        let mut seconds = Vec::with_capacity(reps);
        let mut left = reps;
        while left > 0 {
            let n = left.min(per_set);
            left -= n;
            let passes = TimedPasses::new(self, OP, n)?;
            let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
            for i in 0..n {
                plan.record(&mut passes.pass(&mut encoder, i));
            }
            seconds.extend(passes.read(self, encoder)?);
        }
        Ok(seconds)
    }

    /// Device seconds of each dispatch of `plan` where it runs in the plan (each dispatch in a
    /// compute pass of its own with timestamps at its start and end, the plan recorded whole in
    /// order), the median of `reps` executions. Beside [`Gpu::time_plan`] of each dispatch alone
    /// (repeated, its data warm), it shows what a dispatch costs among its neighbours: data
    /// other dispatches wrote, caches they evicted. Needs `Features::TIMESTAMP_QUERY`.
    pub fn time_dispatches_in_order(&self, plan: &Plan, reps: usize) -> Result<Vec<f64>> {
        const OP: &str = "time_dispatches_in_order";
        TimedPasses::require(self, OP)?;
        let n = plan.len();
        if n > (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize {
            return Err(WgnnError::invalid(
                OP,
                format!("{n} dispatches need more than {} timestamp queries", wgpu::QUERY_SET_MAX_QUERIES),
            ));
        }
        let passes = TimedPasses::new(self, OP, n)?;
        let mut runs: Vec<Vec<f64>> = vec![Vec::with_capacity(reps.max(1)); n];
        for _ in 0..reps.max(1) {
            let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
            for (i, d) in plan.dispatches.iter().enumerate() {
                Plan::from(d.clone()).record(&mut passes.pass(&mut encoder, i));
            }
            for (run, seconds) in runs.iter_mut().zip(passes.read(self, encoder)?) {
                run.push(seconds);
            }
        }
        Ok(runs
            .into_iter()
            .map(|mut times| {
                times.sort_by(f64::total_cmp);
                times[times.len() / 2]
            })
            .collect())
    }
}

/// `count` compute passes with timestamps at their start and end (one query set), and the
/// buffer they resolve into.
struct TimedPasses {
    op: &'static str,
    count: usize,
    query_set: Option<wgpu::QuerySet>,
    resolved: wgpu::Buffer,
}

impl TimedPasses {
    /// An error naming `op` where the device has no timestamp queries.
    fn require(gpu: &Gpu, op: &str) -> Result<()> {
        match gpu.profile().timestamps {
            true => Ok(()),
            false => {
                Err(WgnnError::invalid(op, "the device has no TIMESTAMP_QUERY feature; time with a wall clock instead"))
            }
        }
    }

    fn new(gpu: &Gpu, op: &'static str, count: usize) -> Result<TimedPasses> {
        Self::require(gpu, op)?;
        let queries = 2 * count as u32;
        // A query set may not be empty.
        let query_set = (queries > 0)
            .then(|| {
                gpu.scoped(op, || {
                    gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some(op),
                        ty: wgpu::QueryType::Timestamp,
                        count: queries,
                    })
                })
            })
            .transpose()?;
        let resolved = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: (queries as u64 * wgpu::QUERY_SIZE as u64).max(wgpu::QUERY_SIZE as u64),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(TimedPasses { op, count, query_set, resolved })
    }

    /// Pass `i`, timestamps 2i and 2i + 1 at its start and end.
    fn pass<'e>(&self, encoder: &'e mut wgpu::CommandEncoder, i: usize) -> wgpu::ComputePass<'e> {
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.op),
            timestamp_writes: self.query_set.as_ref().map(|query_set| wgpu::ComputePassTimestampWrites {
                query_set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        })
    }

    /// Submits `encoder` (its passes recorded) and reads back each pass's device seconds.
    fn read(&self, gpu: &Gpu, mut encoder: wgpu::CommandEncoder) -> Result<Vec<f64>> {
        let Some(query_set) = &self.query_set else { return Ok(Vec::new()) };
        let queries = 2 * self.count as u32;
        encoder.resolve_query_set(query_set, 0..queries, &self.resolved, 0);
        gpu.submit(self.op, encoder.finish())?;
        let bytes = gpu.read_bytes(&self.resolved, 0, queries as u64 * wgpu::QUERY_SIZE as u64)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period_ns = gpu.queue().get_timestamp_period() as f64;
        Ok(ticks.chunks_exact(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * period_ns * 1e-9).collect())
    }
}
