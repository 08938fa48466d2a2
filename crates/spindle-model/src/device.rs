//! The compute runtime: device choice and libtorch's CPU threads, from raw flags to a validated
//! [`Runtime`] in two stages ([`DeviceSpec`] is what the user typed; [`Runtime`] is what runs).

use std::fmt;
use std::str::FromStr;

/// A device as the user asked for it (`--device auto|cpu|cuda|cuda:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first GPU when this build has the `cuda` feature and a GPU is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// GPU number N.
    Cuda(usize),
}

/// Why a runtime could not be set up; each variant carries the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown device {0:?}: expected auto, cpu, cuda or cuda:N")]
    UnknownDevice(String),
    #[error("device cuda:{0} asked for, but this spindle was built without the `cuda` feature (see README: GPU build)")]
    CudaNotBuilt(usize),
    #[error("device cuda:{index} asked for, but libtorch sees {available} CUDA device(s)")]
    CudaUnavailable { index: usize, available: usize },
    #[error("--threads must be at least 1, got {0}")]
    ZeroThreads(usize),
    #[error("--threads {asked} is more than {MAX_THREADS_PER_CORE} per core on this machine's {cores} cores")]
    TooManyThreads { asked: usize, cores: usize },
}

/// More threads than this per core only slow libtorch down, and tens of thousands of threads
/// exhaust the process's stacks (a "fatal runtime error" instead of a message).
pub const MAX_THREADS_PER_CORE: usize = 4;

impl FromStr for DeviceSpec {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| RuntimeError::UnknownDevice(other.to_owned())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// How many CUDA devices libtorch can use in this build (always 0 without the `cuda` feature).
fn cuda_device_count() -> usize {
    if cfg!(feature = "cuda") { usize::try_from(tch::Cuda::device_count()).unwrap_or(0) } else { 0 }
}

/// The resolved runtime: a concrete device and the CPU thread count in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub device: tch::Device,
    pub threads: usize,
}

impl Runtime {
    /// Resolves `spec` against this build and machine and applies `threads` (None: libtorch's
    /// default, one per core) to libtorch's intra-op pool.
    pub fn init(spec: DeviceSpec, threads: Option<usize>) -> Result<Runtime, RuntimeError> {
        let device = Self::resolve(spec, cfg!(feature = "cuda"), cuda_device_count())?;
        if let Some(n) = threads {
            if n == 0 {
                return Err(RuntimeError::ZeroThreads(n));
            }
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            if n > MAX_THREADS_PER_CORE * cores {
                return Err(RuntimeError::TooManyThreads { asked: n, cores });
            }
            tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
        }
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
        Ok(Runtime { device, threads })
    }

    /// The device choice with the build and the machine made explicit (for tests).
    pub fn resolve(spec: DeviceSpec, cuda_built: bool, cuda_devices: usize) -> Result<tch::Device, RuntimeError> {
        match spec {
            DeviceSpec::Cpu => Ok(tch::Device::Cpu),
            DeviceSpec::Auto if cuda_built && cuda_devices > 0 => Ok(tch::Device::Cuda(0)),
            DeviceSpec::Auto => Ok(tch::Device::Cpu),
            DeviceSpec::Cuda(index) if !cuda_built => Err(RuntimeError::CudaNotBuilt(index)),
            DeviceSpec::Cuda(index) if index >= cuda_devices => Err(RuntimeError::CudaUnavailable { index, available: cuda_devices }),
            DeviceSpec::Cuda(index) => Ok(tch::Device::Cuda(index)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_parse_or_name_the_bad_value() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        let err = "gpu".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(err.to_string(), "unknown device \"gpu\": expected auto, cpu, cuda or cuda:N");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn auto_picks_the_gpu_only_when_built_for_it_and_present() {
        assert_eq!(Runtime::resolve(DeviceSpec::Auto, false, 4), Ok(tch::Device::Cpu));
        assert_eq!(Runtime::resolve(DeviceSpec::Auto, true, 0), Ok(tch::Device::Cpu));
        assert_eq!(Runtime::resolve(DeviceSpec::Auto, true, 2), Ok(tch::Device::Cuda(0)));
    }

    #[test]
    fn an_impossible_gpu_is_an_error_never_a_silent_cpu() {
        assert_eq!(Runtime::resolve(DeviceSpec::Cuda(0), false, 0), Err(RuntimeError::CudaNotBuilt(0)));
        assert_eq!(Runtime::resolve(DeviceSpec::Cuda(1), true, 1), Err(RuntimeError::CudaUnavailable { index: 1, available: 1 }));
        assert_eq!(Runtime::resolve(DeviceSpec::Cuda(1), true, 2), Ok(tch::Device::Cuda(1)));
    }

    #[test]
    fn this_build_runs_and_sets_threads() {
        let rt = Runtime::init(DeviceSpec::Cpu, Some(1)).unwrap();
        assert_eq!(rt, Runtime { device: tch::Device::Cpu, threads: 1 });
        assert_eq!(Runtime::init(DeviceSpec::Cpu, Some(0)), Err(RuntimeError::ZeroThreads(0)));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(Runtime::init(DeviceSpec::Cpu, Some(100_000)), Err(RuntimeError::TooManyThreads { asked: 100_000, cores }));
        // A real libtorch computation on the resolved device.
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(rt.device);
        assert_eq!(t.sum(tch::Kind::Float).double_value(&[]), 6.0);
    }
}
