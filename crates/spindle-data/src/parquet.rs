//! Parquet files as the Hugging Face dataset repositories store them, read through Arrow by
//! column name.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::DataError;

fn bad(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Parquet { path: path.to_path_buf(), problem: problem.into() }
}

/// Every value of the string column `column`, in row order. A missing column, a column that is
/// not a string column, or a null value is an error naming the file and the column.
pub fn read_string_column(path: &Path, column: &str) -> Result<Vec<String>, DataError> {
    let file = spindle_io::regular_file(path).map_err(|io| DataError::Io { path: path.to_path_buf(), io })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(path, e.to_string()))?;
    let schema = builder.schema().clone();
    let index = schema.index_of(column).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        bad(path, format!("no column `{column}` (columns: {})", names.join(", ")))
    })?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder.with_projection(mask).build().map_err(|e| bad(path, e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| bad(path, e.to_string()))?;
        let array = batch.column(0);
        let push = |out: &mut Vec<String>, value: Option<&str>, row: usize| match value {
            Some(v) => {
                out.push(v.to_owned());
                Ok(())
            }
            None => Err(bad(path, format!("column `{column}` has a null at row {row}"))),
        };
        if let Some(strings) = array.as_string_opt::<i32>() {
            for i in 0..strings.len() {
                let row = out.len();
                push(&mut out, strings.is_valid(i).then(|| strings.value(i)), row)?;
            }
        } else if let Some(strings) = array.as_string_opt::<i64>() {
            for i in 0..strings.len() {
                let row = out.len();
                push(&mut out, strings.is_valid(i).then(|| strings.value(i)), row)?;
            }
        } else if let Some(strings) = array.as_string_view_opt() {
            for i in 0..strings.len() {
                let row = out.len();
                push(&mut out, strings.is_valid(i).then(|| strings.value(i)), row)?;
            }
        } else {
            return Err(bad(path, format!("column `{column}` holds {}, not strings", array.data_type())));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataDir;

    fn data() -> DataDir {
        DataDir::resolve_from(None, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
    }

    #[test]
    fn reads_the_wikitext2_test_split() {
        let rows = read_string_column(&data().join("wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"), "text").unwrap();
        // The data folder's README: 4358 rows, 2891 non-empty.
        assert_eq!(rows.len(), 4358);
        assert_eq!(rows.iter().filter(|r| !r.is_empty()).count(), 2891);
        assert_eq!(rows[1], " = Robert Boulter = \n");
    }

    #[test]
    fn a_wrong_column_is_named_with_the_columns_there_are() {
        let path = data().join("tasks/glue/rte/validation-00000-of-00001.parquet");
        let err = read_string_column(&path, "text").unwrap_err();
        assert_eq!(err.to_string(), format!("{}: no column `text` (columns: sentence1, sentence2, label, idx)", path.display()));
        let err = read_string_column(&path, "label").unwrap_err();
        assert!(err.to_string().ends_with("column `label` holds Int64, not strings"), "{err}");
    }
}
