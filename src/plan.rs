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
        if !self.profile().timestamps {
            return Err(WgnnError::invalid(
                OP,
                "the device has no TIMESTAMP_QUERY feature; time with a wall clock instead",
            ));
        }
        // Two queries per repetition, at most wgpu::QUERY_SET_MAX_QUERIES per set.
        let per_set = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;
        let period_ns = self.queue().get_timestamp_period() as f64;
        let mut seconds = Vec::with_capacity(reps);
        let mut left = reps;
        while left > 0 {
            let n = left.min(per_set);
            left -= n;
            let queries = 2 * n as u32;
            let query_set = self.scoped(OP, || {
                self.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some(OP),
                    ty: wgpu::QueryType::Timestamp,
                    count: queries,
                })
            })?;
            let resolved = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(OP),
                size: queries as u64 * wgpu::QUERY_SIZE as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
            for i in 0..n as u32 {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(OP),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_set,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    }),
                });
                plan.record(&mut pass);
            }
            encoder.resolve_query_set(&query_set, 0..queries, &resolved, 0);
            self.submit(OP, encoder.finish())?;
            let bytes = self.read_bytes(&resolved, 0, queries as u64 * wgpu::QUERY_SIZE as u64)?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            seconds.extend(ticks.chunks_exact(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * period_ns * 1e-9));
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
        if !self.profile().timestamps {
            return Err(WgnnError::invalid(
                OP,
                "the device has no TIMESTAMP_QUERY feature; time with a wall clock instead",
            ));
        }
        let n = plan.len();
        let queries = n.checked_mul(2).filter(|&q| q <= wgpu::QUERY_SET_MAX_QUERIES as usize).ok_or_else(|| {
            WgnnError::invalid(
                OP,
                format!("{n} dispatches need more than {} timestamp queries", wgpu::QUERY_SET_MAX_QUERIES),
            )
        })? as u32;
        if n == 0 {
            return Ok(Vec::new());
        }
        let period_ns = self.queue().get_timestamp_period() as f64;
        let query_set = self.scoped(OP, || {
            self.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some(OP),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            })
        })?;
        let resolved = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(OP),
            size: queries as u64 * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut runs: Vec<Vec<f64>> = vec![Vec::with_capacity(reps.max(1)); n];
        for _ in 0..reps.max(1) {
            let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
            for (i, d) in plan.dispatches.iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(OP),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                Plan::from(d.clone()).record(&mut pass);
            }
            encoder.resolve_query_set(&query_set, 0..queries, &resolved, 0);
            self.submit(OP, encoder.finish())?;
            let bytes = self.read_bytes(&resolved, 0, queries as u64 * wgpu::QUERY_SIZE as u64)?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            for (run, t) in runs.iter_mut().zip(ticks.chunks_exact(2)) {
                run.push(t[1].wrapping_sub(t[0]) as f64 * period_ns * 1e-9);
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
