//! Node-level placement inside one pool: best-fit packing of whole GPUs, shared GPUs for
//! fractional requests, all-or-nothing gangs. Indexed so that a pod is placed in O(log nodes).

use std::collections::BTreeSet;

use crate::types::{JobId, Milli, PodPlacement};

const WHOLE: u32 = 1000;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    /// Used share per GPU, 0..=1000.
    pub gpu_used: Vec<u32>,
    pub free_whole: u32,
    pub cpu_total: Milli,
    pub cpu_free: Milli,
    pub mem_total: u64,
    pub mem_free: u64,
    pub alive: bool,
    pub jobs: BTreeSet<JobId>,
}

/// One pod as the pool sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pod {
    pub gpu: Milli,
    pub cpu: Milli,
    pub mem: u64,
}

/// A pod's allocation: node index and (gpu index, share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alloc {
    pub node: usize,
    pub gpus: Vec<(u32, u32)>,
    pub cpu: Milli,
    pub mem: u64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Nodes {
    pub nodes: Vec<Node>,
    /// (free whole GPUs, node) of live nodes.
    by_free: BTreeSet<(u32, usize)>,
    /// (free share, node, gpu) of partly used GPUs of live nodes.
    partial: BTreeSet<(u32, usize, u32)>,
    pub total_gpu: Milli,
    pub free_gpu: Milli,
    pub max_node_gpus: u32,
    pub max_node_cpu: Milli,
    pub max_node_mem: u64,
}

impl Nodes {
    pub fn add(&mut self, name: &str, gpus: u32, cpu: Milli, mem: u64) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            gpu_used: vec![0; gpus as usize],
            free_whole: gpus,
            cpu_total: cpu,
            cpu_free: cpu,
            mem_total: mem,
            mem_free: mem,
            alive: true,
            jobs: BTreeSet::new(),
        });
        self.by_free.insert((gpus, idx));
        self.total_gpu += Milli::from(gpus) * Milli::from(WHOLE);
        self.free_gpu += Milli::from(gpus) * Milli::from(WHOLE);
        self.recompute_max();
        idx
    }

    /// Takes a node out of service. The caller has released its jobs first.
    pub fn retire(&mut self, idx: usize) {
        let Some(node) = self.nodes.get_mut(idx) else {
            return;
        };
        if !node.alive {
            return;
        }
        node.alive = false;
        self.by_free.remove(&(node.free_whole, idx));
        for (g, used) in node.gpu_used.iter().enumerate() {
            if *used > 0 && *used < WHOLE {
                self.partial.remove(&(WHOLE - used, idx, g as u32));
            }
        }
        let gpus = node.gpu_used.len() as Milli * Milli::from(WHOLE);
        let used: Milli = node.gpu_used.iter().map(|u| Milli::from(*u)).sum();
        self.total_gpu -= gpus;
        self.free_gpu -= gpus - used;
        self.recompute_max();
    }

    /// How many pods like `pod` the live nodes could hold at once when empty.
    pub fn capacity_for(&self, pod: Pod) -> u64 {
        let per = |total: u64, need: u64| total.checked_div(need).unwrap_or(u64::MAX);
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                let gpus = n.gpu_used.len() as u64;
                let by_gpu = if pod.gpu == 0 {
                    u64::MAX
                } else if pod.gpu < Milli::from(WHOLE) {
                    gpus * per(u64::from(WHOLE), pod.gpu)
                } else {
                    per(gpus, pod.gpu / u64::from(WHOLE))
                };
                by_gpu
                    .min(per(n.cpu_total, pod.cpu))
                    .min(per(n.mem_total, pod.mem))
            })
            .fold(0u64, |acc, c| acc.saturating_add(c))
    }

    fn recompute_max(&mut self) {
        let live = self.nodes.iter().filter(|n| n.alive);
        self.max_node_gpus = 0;
        self.max_node_cpu = 0;
        self.max_node_mem = 0;
        for n in live {
            self.max_node_gpus = self.max_node_gpus.max(n.gpu_used.len() as u32);
            self.max_node_cpu = self.max_node_cpu.max(n.cpu_total);
            self.max_node_mem = self.max_node_mem.max(n.mem_total);
        }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.alive && n.name == name)
    }

    fn set_gpu(&mut self, node: usize, gpu: u32, new_used: u32) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let old = n.gpu_used[gpu as usize];
        if old == new_used {
            return;
        }
        if old > 0 && old < WHOLE {
            self.partial.remove(&(WHOLE - old, node, gpu));
        }
        if new_used > 0 && new_used < WHOLE {
            self.partial.insert((WHOLE - new_used, node, gpu));
        }
        let old_whole = n.free_whole;
        if old == 0 {
            n.free_whole -= 1;
        }
        if new_used == 0 {
            n.free_whole += 1;
        }
        n.gpu_used[gpu as usize] = new_used;
        if old_whole != n.free_whole {
            self.by_free.remove(&(old_whole, node));
            self.by_free.insert((n.free_whole, node));
        }
        self.free_gpu = self.free_gpu + Milli::from(old) - Milli::from(new_used);
    }

    fn fits_host(&self, node: usize, pod: &Pod) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.alive && n.cpu_free >= pod.cpu && n.mem_free >= pod.mem)
    }

    /// Places one pod (best fit) and books it; `None` if no node can hold it now.
    fn place_pod(&mut self, pod: &Pod) -> Option<Alloc> {
        let (node, gpus) = if pod.gpu == 0 {
            // CPU-only: the most loaded node (fewest free GPUs) with room for CPU and memory.
            let node = self
                .by_free
                .iter()
                .map(|(_, n)| *n)
                .find(|n| self.fits_host(*n, pod))?;
            (node, Vec::new())
        } else if pod.gpu < Milli::from(WHOLE) {
            let share = pod.gpu as u32;
            // A partly used GPU with the least room that still fits, else a free GPU on the
            // node with the fewest free GPUs.
            let partly = self
                .partial
                .range((share, 0, 0)..)
                .find(|(_, n, _)| self.fits_host(*n, pod))
                .map(|(_, n, g)| (*n, *g));
            match partly {
                Some((node, g)) => {
                    let used = self.nodes[node].gpu_used[g as usize];
                    self.set_gpu(node, g, used + share);
                    (node, vec![(g, share)])
                }
                None => {
                    let node = self
                        .by_free
                        .range((1, 0)..)
                        .map(|(_, n)| *n)
                        .find(|n| self.fits_host(*n, pod))?;
                    let g = self.nodes[node].gpu_used.iter().position(|u| *u == 0)? as u32;
                    self.set_gpu(node, g, share);
                    (node, vec![(g, share)])
                }
            }
        } else {
            let k = (pod.gpu / Milli::from(WHOLE)) as u32;
            let node = self
                .by_free
                .range((k, 0)..)
                .map(|(_, n)| *n)
                .find(|n| self.fits_host(*n, pod))?;
            let idx: Vec<u32> = self.nodes[node]
                .gpu_used
                .iter()
                .enumerate()
                .filter(|(_, u)| **u == 0)
                .take(k as usize)
                .map(|(g, _)| g as u32)
                .collect();
            for g in &idx {
                self.set_gpu(node, *g, WHOLE);
            }
            (node, idx.into_iter().map(|g| (g, WHOLE)).collect())
        };
        let n = &mut self.nodes[node];
        n.cpu_free -= pod.cpu;
        n.mem_free -= pod.mem;
        Some(Alloc {
            node,
            gpus,
            cpu: pod.cpu,
            mem: pod.mem,
        })
    }

    fn release_pod(&mut self, a: &Alloc) {
        for (g, share) in &a.gpus {
            let used = self
                .nodes
                .get(a.node)
                .and_then(|n| n.gpu_used.get(*g as usize))
                .copied()
                .unwrap_or(0);
            self.set_gpu(a.node, *g, used.saturating_sub(*share));
        }
        if let Some(n) = self.nodes.get_mut(a.node) {
            n.cpu_free += a.cpu;
            n.mem_free += a.mem;
        }
    }

    /// Places every pod of a gang or none of them.
    pub fn place_gang(&mut self, job: JobId, pods: u32, pod: &Pod) -> Option<Vec<Alloc>> {
        if pod.gpu * Milli::from(pods) > self.free_gpu {
            return None;
        }
        let mut done: Vec<Alloc> = Vec::with_capacity(pods as usize);
        for _ in 0..pods {
            match self.place_pod(pod) {
                Some(a) => done.push(a),
                None => {
                    for a in done.iter().rev() {
                        self.release_pod(a);
                    }
                    return None;
                }
            }
        }
        for a in &done {
            self.nodes[a.node].jobs.insert(job);
        }
        Some(done)
    }

    pub fn release_gang(&mut self, job: JobId, allocs: &[Alloc]) {
        for a in allocs {
            self.release_pod(a);
            if let Some(n) = self.nodes.get_mut(a.node) {
                n.jobs.remove(&job);
            }
        }
    }

    /// Re-books allocations exactly as they were (undo of a tentative release).
    pub fn rebook(&mut self, job: JobId, allocs: &[Alloc]) {
        for a in allocs {
            for (g, share) in &a.gpus {
                let used = self.nodes[a.node].gpu_used[*g as usize];
                self.set_gpu(a.node, *g, used + share);
            }
            let n = &mut self.nodes[a.node];
            n.cpu_free -= a.cpu;
            n.mem_free -= a.mem;
            n.jobs.insert(job);
        }
    }

    pub fn describe(&self, allocs: &[Alloc]) -> Vec<PodPlacement> {
        allocs
            .iter()
            .map(|a| PodPlacement {
                node: self.nodes[a.node].name.clone(),
                gpus: a.gpus.clone(),
            })
            .collect()
    }
}
