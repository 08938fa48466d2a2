//! Statistics accumulated from a linear layer's input activations, in f32, as running means over
//! sequences exactly as the reference code updates them (so a batch of `b` sequences is one
//! update with `tmp = b`, and feeding one sequence at a time reproduces the reference bit for bit
//! up to summation order).

use tch::{Device, Kind, Tensor};

use crate::PruneError;

/// `t`, or [`PruneError::NotFinite`] naming `what` when any entry is NaN or infinite: a
/// statistic that overflowed (activations held in f16, a broken checkpoint) would otherwise
/// compare false everywhere and leave the weight silently unpruned.
fn finite<'a>(t: &'a Tensor, what: &str) -> Result<&'a Tensor, PruneError> {
    if bool::try_from(t.isfinite().all())? { Ok(t) } else { Err(PruneError::NotFinite { what: what.to_owned() }) }
}

/// Rows of `x` as `[tokens, in]` f32 and the number of sequences they came from: `[in]` is one
/// token of one sequence, `[tokens, in]` one sequence, `[b, .., in]` b sequences.
fn flatten(x: &Tensor, columns: i64) -> Result<(Tensor, usize), PruneError> {
    let size = x.size();
    let last = size.last().copied().unwrap_or(0);
    if last != columns {
        return Err(PruneError::Shape(format!("activations {size:?} do not end in the layer's {columns} inputs")));
    }
    let sequences = if size.len() >= 3 { size[0] as usize } else { 1 };
    Ok((x.reshape([-1, columns]).to_kind(Kind::Float), sequences))
}

/// Wanda's `scaler_row`: the running mean over sequences of each input column's squared L2 norm
/// (`WrappedGPT.add_batch`).
#[derive(Debug)]
pub struct ColumnNorms {
    sq: Tensor,
    nsamples: usize,
}

impl ColumnNorms {
    pub fn new(columns: i64, device: Device) -> ColumnNorms {
        ColumnNorms { sq: Tensor::zeros([columns], (Kind::Float, device)), nsamples: 0 }
    }

    /// Statistics already accumulated elsewhere (e.g. rescaled after a change of basis):
    /// `scaler_row` `[in]` over `nsamples` sequences.
    pub fn from_parts(sq: Tensor, nsamples: usize) -> ColumnNorms {
        ColumnNorms { sq: sq.to_kind(Kind::Float), nsamples }
    }

    /// Adds the activations of one batch of sequences.
    pub fn add_batch(&mut self, x: &Tensor) -> Result<(), PruneError> {
        let (x, tmp) = flatten(x, self.sq.size()[0])?;
        let n = self.nsamples as f64;
        self.sq *= n / (n + tmp as f64);
        self.nsamples += tmp;
        let norms = x.norm_scalaropt_dim(2, [0], false).pow_tensor_scalar(2);
        self.sq += norms / self.nsamples as f64;
        Ok(())
    }

    /// `scaler_row` `[in]`; an error if no batch was added or an entry is not finite.
    pub fn get(&self) -> Result<&Tensor, PruneError> {
        if self.nsamples == 0 {
            return Err(PruneError::NoStatistics);
        }
        finite(&self.sq, "the calibration inputs' squared column norms (Wanda's scaler_row)")
    }

    pub fn nsamples(&self) -> usize {
        self.nsamples
    }
}

/// SparseGPT's Hessian `H = (2/n)·Σ XᵀX` over n sequences, as a running update
/// (`SparseGPT.add_batch`).
#[derive(Debug)]
pub struct Hessian {
    h: Tensor,
    nsamples: usize,
}

impl Hessian {
    pub fn new(columns: i64, device: Device) -> Hessian {
        Hessian { h: Tensor::zeros([columns, columns], (Kind::Float, device)), nsamples: 0 }
    }

    pub fn add_batch(&mut self, x: &Tensor) -> Result<(), PruneError> {
        let (x, tmp) = flatten(x, self.h.size()[0])?;
        let n = self.nsamples as f64;
        self.h *= n / (n + tmp as f64);
        self.nsamples += tmp;
        let x = x * (2.0 / self.nsamples as f64).sqrt();
        self.h += x.tr().matmul(&x);
        Ok(())
    }

    /// `H` `[in, in]`; an error if no batch was added or an entry is not finite.
    pub fn get(&self) -> Result<&Tensor, PruneError> {
        if self.nsamples == 0 {
            return Err(PruneError::NoStatistics);
        }
        finite(&self.h, "the calibration inputs' Hessian XᵀX")
    }

    pub fn nsamples(&self) -> usize {
        self.nsamples
    }
}

/// OWL's activation norms (llm-compressor `_get_activations`): the mean over the `total`
/// calibration sequences of each input column's L2 norm within a sequence.
#[derive(Debug)]
pub struct ActNorms {
    acc: Tensor,
    total: usize,
    seen: usize,
}

impl ActNorms {
    /// `total` is the number of calibration sequences the mean is over.
    pub fn new(columns: i64, total: usize, device: Device) -> ActNorms {
        ActNorms { acc: Tensor::zeros([columns], (Kind::Float, device)), total, seen: 0 }
    }

    /// Adds a batch `[b, seq, in]` (each leading index one sequence).
    pub fn add_batch(&mut self, x: &Tensor) -> Result<(), PruneError> {
        let columns = self.acc.size()[0];
        let size = x.size();
        if size.len() != 3 || size[2] != columns {
            return Err(PruneError::Shape(format!("activations {size:?} are not [batch, seq, {columns}]")));
        }
        let per_seq = x.to_kind(Kind::Float).pow_tensor_scalar(2).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).sqrt();
        self.acc += per_seq.sum_dim_intlist([0i64].as_slice(), false, Kind::Float) / self.total as f64;
        self.seen += size[0] as usize;
        Ok(())
    }

    pub fn get(&self) -> Result<&Tensor, PruneError> {
        if self.seen == 0 {
            return Err(PruneError::NoStatistics);
        }
        finite(&self.acc, "the calibration inputs' column norms (OWL)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_finite(r: Result<&Tensor, PruneError>) -> String {
        match r {
            Err(PruneError::NotFinite { what }) => what,
            other => panic!("expected NotFinite, got {other:?}"),
        }
    }

    #[test]
    fn statistics_of_overflowed_activations_are_an_error_not_a_silent_mask() {
        let ok = Tensor::ones([2, 3, 4], (Kind::Float, Device::Cpu));
        for bad in [f64::NAN, f64::INFINITY] {
            let x = ok.copy();
            let _ = x.get(1).get(2).get(3).fill_(bad);
            let mut n = ColumnNorms::new(4, Device::Cpu);
            n.add_batch(&ok).unwrap();
            assert!(n.get().is_ok());
            n.add_batch(&x).unwrap();
            assert_eq!(not_finite(n.get()), "the calibration inputs' squared column norms (Wanda's scaler_row)");
            let mut h = Hessian::new(4, Device::Cpu);
            h.add_batch(&x).unwrap();
            assert_eq!(not_finite(h.get()), "the calibration inputs' Hessian XᵀX");
            let mut a = ActNorms::new(4, 2, Device::Cpu);
            a.add_batch(&x).unwrap();
            assert_eq!(not_finite(a.get()), "the calibration inputs' column norms (OWL)");
        }
    }
}
