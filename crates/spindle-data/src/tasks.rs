//! The zero-shot tasks' data: one typed record per dataset row, read from the parquet files of a
//! data directory laid out like the Hugging Face dataset repositories (PIQA, BoolQ, OpenBookQA,
//! ARC-Easy/Challenge, WinoGrande, RTE, HellaSwag).
//!
//! Zero-shot accuracy is only comparable with the literature when the rows scored are exactly the
//! rows lm-evaluation-harness scores, so this module keeps the rows as they are (no prompt is built
//! here: prompts are data in `eval/tasks/`, turned into requests by `spindle-eval`) and checks what
//! an evaluation relies on: every gold label within range, every answer key among the choice
//! labels, exactly two options where a task has two. A row that breaks this is an error naming the
//! file, the row (counted from 0, as pyarrow and pandas count) and the field, never a row silently
//! skipped.
//!
//! Reading is one generic path: the needed columns of a parquet file are projected, each record
//! batch is rendered as JSON objects by arrow-json's writer, and each task turns one object into its
//! record field by field with serde, so a label stored as `int64` or as a string (`"2"`, as the hub
//! stores WinoGrande's `answer` and HellaSwag's `label`) is read the same way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{DataDir, DataError};

/// A zero-shot task whose data this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// PIQA validation.
    Piqa,
    /// BoolQ validation (super_glue layout).
    BoolQ,
    /// OpenBookQA main test.
    OpenBookQA,
    /// ARC-Easy test.
    ArcEasy,
    /// ARC-Challenge test.
    ArcChallenge,
    /// WinoGrande (xl) validation.
    Winogrande,
    /// RTE validation (GLUE layout).
    Rte,
    /// The 1000-row HellaSwag validation subset with every original field.
    HellaSwag,
    /// The full HellaSwag validation set, preprocessed (`query`, `endings`, `label`).
    HellaSwagFull,
}

impl Task {
    /// Every task, in the order of the papers' zero-shot tables.
    pub const ALL: [Task; 9] = [
        Task::Piqa,
        Task::BoolQ,
        Task::OpenBookQA,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Winogrande,
        Task::Rte,
        Task::HellaSwag,
        Task::HellaSwagFull,
    ];

    /// The lm-evaluation-harness name (`hellaswag_full` for the preprocessed full validation set,
    /// which lm-eval has no name for).
    pub fn name(self) -> &'static str {
        match self {
            Task::Piqa => "piqa",
            Task::BoolQ => "boolq",
            Task::OpenBookQA => "openbookqa",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Winogrande => "winogrande",
            Task::Rte => "rte",
            Task::HellaSwag => "hellaswag",
            Task::HellaSwagFull => "hellaswag_full",
        }
    }

    /// The task's parquet file, relative to the data directory.
    pub fn relative_path(self) -> &'static str {
        match self {
            Task::Piqa => "tasks/piqa/validation-00000-of-00001.parquet",
            Task::BoolQ => "tasks/boolq/validation-00000-of-00001.parquet",
            Task::OpenBookQA => "tasks/openbookqa/test-00000-of-00001.parquet",
            Task::ArcEasy => "tasks/ai2_arc/ARC-Easy/test-00000-of-00001.parquet",
            Task::ArcChallenge => "tasks/ai2_arc/ARC-Challenge/test-00000-of-00001.parquet",
            Task::Winogrande => "tasks/winogrande/winogrande_xl/validation-00000-of-00001.parquet",
            Task::Rte => "tasks/glue/rte/validation-00000-of-00001.parquet",
            Task::HellaSwag => "tasks/hellaswag/validation-subset1000.parquet",
            Task::HellaSwagFull => "tasks/hellaswag/validation-preprocessed-00000-of-00001.parquet",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Task, TaskError> {
        Task::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| TaskError::UnknownTask { name: s.to_owned() })
    }
}

/// Everything that can go wrong while reading a task's rows; each variant names the task or file.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A name that is not one of [`Task::ALL`]'s.
    #[error("unknown task `{name}` (known: {})", Task::ALL.map(Task::name).join(", "))]
    UnknownTask { name: String },
    /// The task's file is not in the data directory.
    #[error("{path}: no such file (the data of task `{task}`)")]
    MissingFile { task: Task, path: PathBuf },
    /// The file cannot be opened or is not readable parquet, or lacks a column.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A value that does not fit the task: wrong type, null, or out of range.
    #[error("{path}: row {row}, field `{field}`: {problem}")]
    Field { path: PathBuf, row: usize, field: String, problem: String },
}

/// One answer choice of OpenBookQA or ARC, as the dataset labels it (`"A"`, or `"1"` in some ARC
/// copies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Choice {
    pub label: String,
    pub text: String,
}

/// A PIQA row: a goal and two solutions, `label` the index (0 or 1) of the right one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Piqa {
    pub goal: String,
    pub sol1: String,
    pub sol2: String,
    pub label: u8,
}

/// A BoolQ row: `label` is true where the file has 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BoolQ {
    pub question: String,
    pub passage: String,
    pub label: bool,
    pub idx: i64,
}

/// An OpenBookQA row; `answer_key` is one of the choices' labels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenBookQA {
    pub id: String,
    pub question_stem: String,
    pub choices: Vec<Choice>,
    pub answer_key: String,
}

impl OpenBookQA {
    /// The position of the gold choice (always `Some` for a row this module loaded).
    pub fn answer_index(&self) -> Option<usize> {
        self.choices.iter().position(|c| c.label == self.answer_key)
    }
}

/// An ARC (Easy or Challenge) row; `answer_key` is one of the choices' labels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Arc {
    pub id: String,
    pub question: String,
    pub choices: Vec<Choice>,
    pub answer_key: String,
}

impl Arc {
    /// The position of the gold choice (always `Some` for a row this module loaded).
    pub fn answer_index(&self) -> Option<usize> {
        self.choices.iter().position(|c| c.label == self.answer_key)
    }
}

/// A WinoGrande row: `sentence` holds a `_` for the blank, `answer` is 1 or 2 (which option
/// fills it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Winogrande {
    pub sentence: String,
    pub option1: String,
    pub option2: String,
    pub answer: u8,
}

/// An RTE row: `label` 0 is entailment, 1 not entailment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rte {
    pub sentence1: String,
    pub sentence2: String,
    pub label: u8,
    pub idx: i64,
}

/// A HellaSwag validation row with every original field; `label` indexes `endings`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HellaSwag {
    pub ind: i64,
    pub activity_label: String,
    pub ctx_a: String,
    pub ctx_b: String,
    pub ctx: String,
    pub endings: Vec<String>,
    pub source_id: String,
    pub split: String,
    pub split_type: String,
    pub label: usize,
}

/// A row of the preprocessed full HellaSwag validation set: `query` is already
/// `activity_label: ctx` (cleaned, `ctx_b` not capitalised); `label` indexes `endings`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HellaSwagPreprocessed {
    pub query: String,
    pub endings: Vec<String>,
    pub label: usize,
}

/// The rows of one task, whichever it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRecords {
    Piqa(Vec<Piqa>),
    BoolQ(Vec<BoolQ>),
    OpenBookQA(Vec<OpenBookQA>),
    ArcEasy(Vec<Arc>),
    ArcChallenge(Vec<Arc>),
    Winogrande(Vec<Winogrande>),
    Rte(Vec<Rte>),
    HellaSwag(Vec<HellaSwag>),
    HellaSwagFull(Vec<HellaSwagPreprocessed>),
}

impl TaskRecords {
    /// The task these rows belong to.
    pub fn task(&self) -> Task {
        match self {
            TaskRecords::Piqa(_) => Task::Piqa,
            TaskRecords::BoolQ(_) => Task::BoolQ,
            TaskRecords::OpenBookQA(_) => Task::OpenBookQA,
            TaskRecords::ArcEasy(_) => Task::ArcEasy,
            TaskRecords::ArcChallenge(_) => Task::ArcChallenge,
            TaskRecords::Winogrande(_) => Task::Winogrande,
            TaskRecords::Rte(_) => Task::Rte,
            TaskRecords::HellaSwag(_) => Task::HellaSwag,
            TaskRecords::HellaSwagFull(_) => Task::HellaSwagFull,
        }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        match self {
            TaskRecords::Piqa(r) => r.len(),
            TaskRecords::BoolQ(r) => r.len(),
            TaskRecords::OpenBookQA(r) => r.len(),
            TaskRecords::ArcEasy(r) | TaskRecords::ArcChallenge(r) => r.len(),
            TaskRecords::Winogrande(r) => r.len(),
            TaskRecords::Rte(r) => r.len(),
            TaskRecords::HellaSwag(r) => r.len(),
            TaskRecords::HellaSwagFull(r) => r.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row as a JSON object with the record's field names (what task templates address).
    pub fn json_rows(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        fn rows<T: serde::Serialize>(r: &[T]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
            r.iter().map(serde_json::to_value).collect()
        }
        match self {
            TaskRecords::Piqa(r) => rows(r),
            TaskRecords::BoolQ(r) => rows(r),
            TaskRecords::OpenBookQA(r) => rows(r),
            TaskRecords::ArcEasy(r) | TaskRecords::ArcChallenge(r) => rows(r),
            TaskRecords::Winogrande(r) => rows(r),
            TaskRecords::Rte(r) => rows(r),
            TaskRecords::HellaSwag(r) => rows(r),
            TaskRecords::HellaSwagFull(r) => rows(r),
        }
    }
}

/// Every row of `task`, read from its file in `dir`.
pub fn load(task: Task, dir: &DataDir) -> Result<TaskRecords, TaskError> {
    Ok(match task {
        Task::Piqa => TaskRecords::Piqa(load_piqa(dir)?),
        Task::BoolQ => TaskRecords::BoolQ(load_boolq(dir)?),
        Task::OpenBookQA => TaskRecords::OpenBookQA(load_openbookqa(dir)?),
        Task::ArcEasy => TaskRecords::ArcEasy(load_arc_easy(dir)?),
        Task::ArcChallenge => TaskRecords::ArcChallenge(load_arc_challenge(dir)?),
        Task::Winogrande => TaskRecords::Winogrande(load_winogrande(dir)?),
        Task::Rte => TaskRecords::Rte(load_rte(dir)?),
        Task::HellaSwag => TaskRecords::HellaSwag(load_hellaswag(dir)?),
        Task::HellaSwagFull => TaskRecords::HellaSwagFull(load_hellaswag_full(dir)?),
    })
}

/// PIQA validation (`goal`, `sol1`, `sol2`, `label` 0/1).
pub fn load_piqa(dir: &DataDir) -> Result<Vec<Piqa>, TaskError> {
    read_rows(Task::Piqa, dir, &["goal", "sol1", "sol2", "label"], |row| {
        Ok(Piqa { goal: row.take("goal")?, sol1: row.take("sol1")?, sol2: row.take("sol2")?, label: row.small_int("label", 0, 1)? })
    })
}

/// BoolQ validation (`question`, `passage`, `idx`, `label` 1 = true).
pub fn load_boolq(dir: &DataDir) -> Result<Vec<BoolQ>, TaskError> {
    read_rows(Task::BoolQ, dir, &["question", "passage", "idx", "label"], |row| {
        Ok(BoolQ {
            question: row.take("question")?,
            passage: row.take("passage")?,
            label: row.small_int("label", 0, 1)? == 1,
            idx: row.take("idx")?,
        })
    })
}

/// OpenBookQA main test (`id`, `question_stem`, `choices{text,label}`, `answerKey`).
pub fn load_openbookqa(dir: &DataDir) -> Result<Vec<OpenBookQA>, TaskError> {
    read_rows(Task::OpenBookQA, dir, &["id", "question_stem", "choices", "answerKey"], |row| {
        let (choices, answer_key) = row.choices_and_key()?;
        Ok(OpenBookQA { id: row.take("id")?, question_stem: row.take("question_stem")?, choices, answer_key })
    })
}

/// ARC-Easy test (`id`, `question`, `choices{text,label}`, `answerKey`).
pub fn load_arc_easy(dir: &DataDir) -> Result<Vec<Arc>, TaskError> {
    load_arc(Task::ArcEasy, dir)
}

/// ARC-Challenge test (`id`, `question`, `choices{text,label}`, `answerKey`).
pub fn load_arc_challenge(dir: &DataDir) -> Result<Vec<Arc>, TaskError> {
    load_arc(Task::ArcChallenge, dir)
}

fn load_arc(task: Task, dir: &DataDir) -> Result<Vec<Arc>, TaskError> {
    read_rows(task, dir, &["id", "question", "choices", "answerKey"], |row| {
        let (choices, answer_key) = row.choices_and_key()?;
        Ok(Arc { id: row.take("id")?, question: row.take("question")?, choices, answer_key })
    })
}

/// WinoGrande (xl) validation (`sentence` with one `_`, `option1`, `option2`, `answer` "1"/"2").
pub fn load_winogrande(dir: &DataDir) -> Result<Vec<Winogrande>, TaskError> {
    read_rows(Task::Winogrande, dir, &["sentence", "option1", "option2", "answer"], |row| {
        let sentence: String = row.take("sentence")?;
        if !sentence.contains('_') {
            return Err(row.problem("sentence", "has no `_` marking the blank"));
        }
        Ok(Winogrande { sentence, option1: row.take("option1")?, option2: row.take("option2")?, answer: row.small_int("answer", 1, 2)? })
    })
}

/// RTE validation, GLUE layout (`sentence1`, `sentence2`, `label` 0 = entailment, `idx`).
pub fn load_rte(dir: &DataDir) -> Result<Vec<Rte>, TaskError> {
    read_rows(Task::Rte, dir, &["sentence1", "sentence2", "label", "idx"], |row| {
        Ok(Rte {
            sentence1: row.take("sentence1")?,
            sentence2: row.take("sentence2")?,
            label: row.small_int("label", 0, 1)?,
            idx: row.take("idx")?,
        })
    })
}

/// The 1000-row HellaSwag validation subset with every original field.
pub fn load_hellaswag(dir: &DataDir) -> Result<Vec<HellaSwag>, TaskError> {
    let columns = ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label"];
    read_rows(Task::HellaSwag, dir, &columns, |row| {
        let (endings, label) = row.endings_and_label()?;
        Ok(HellaSwag {
            ind: row.take("ind")?,
            activity_label: row.take("activity_label")?,
            ctx_a: row.take("ctx_a")?,
            ctx_b: row.take("ctx_b")?,
            ctx: row.take("ctx")?,
            endings,
            source_id: row.take("source_id")?,
            split: row.take("split")?,
            split_type: row.take("split_type")?,
            label,
        })
    })
}

/// The full HellaSwag validation set, preprocessed (`query`, `endings`, `label`).
pub fn load_hellaswag_full(dir: &DataDir) -> Result<Vec<HellaSwagPreprocessed>, TaskError> {
    read_rows(Task::HellaSwagFull, dir, &["query", "endings", "label"], |row| {
        let (endings, label) = row.endings_and_label()?;
        Ok(HellaSwagPreprocessed { query: row.take("query")?, endings, label })
    })
}

/// One row of a file as a JSON object, taken apart field by field.
struct Row<'a> {
    path: &'a Path,
    index: usize,
    fields: Map<String, Value>,
}

/// The hub's `choices` struct: parallel lists of texts and labels.
#[derive(Deserialize)]
struct RawChoices {
    text: Vec<String>,
    label: Vec<String>,
}

impl Row<'_> {
    fn problem(&self, field: &str, problem: impl Into<String>) -> TaskError {
        TaskError::Field { path: self.path.to_path_buf(), row: self.index, field: field.to_owned(), problem: problem.into() }
    }

    /// The value of `field`, which must be present and not null.
    fn value(&mut self, field: &str) -> Result<Value, TaskError> {
        match self.fields.remove(field) {
            None | Some(Value::Null) => Err(self.problem(field, "is null")),
            Some(value) => Ok(value),
        }
    }

    /// The value of `field`, which must be present and not null, as a `T`.
    fn take<T: DeserializeOwned>(&mut self, field: &str) -> Result<T, TaskError> {
        let value = self.value(field)?;
        serde_json::from_value(value).map_err(|e| self.problem(field, e.to_string()))
    }

    /// An integer label (stored as an integer or as its decimal string, as the hub stores some)
    /// in `lo..=hi`.
    fn int_in(&mut self, field: &str, lo: i64, hi: i64) -> Result<i64, TaskError> {
        let value = match self.value(field)? {
            Value::Number(n) => n.as_i64().ok_or_else(|| self.problem(field, format!("{n} is not an integer label")))?,
            Value::String(s) => s.trim().parse::<i64>().map_err(|_| self.problem(field, format!("{s:?} is not an integer label")))?,
            other => return Err(self.problem(field, format!("{other} is neither an integer nor a string"))),
        };
        if (lo..=hi).contains(&value) {
            Ok(value)
        } else if hi == lo + 1 {
            Err(self.problem(field, format!("is {value}, expected {lo} or {hi}")))
        } else {
            Err(self.problem(field, format!("is {value}, expected {lo} to {hi}")))
        }
    }

    fn small_int(&mut self, field: &str, lo: u8, hi: u8) -> Result<u8, TaskError> {
        let value = self.int_in(field, i64::from(lo), i64::from(hi))?;
        u8::try_from(value).map_err(|_| self.problem(field, format!("is {value}, expected {lo} to {hi}")))
    }

    /// `choices` (at least two, labels distinct, as many texts as labels) and `answerKey`, which
    /// must be one of the labels.
    fn choices_and_key(&mut self) -> Result<(Vec<Choice>, String), TaskError> {
        let raw: RawChoices = self.take("choices")?;
        if raw.text.len() != raw.label.len() {
            let (t, l) = (raw.text.len(), raw.label.len());
            return Err(self.problem("choices", format!("{t} texts but {l} labels")));
        }
        if raw.text.len() < 2 {
            return Err(self.problem("choices", format!("{} choices, expected at least 2", raw.text.len())));
        }
        for (i, label) in raw.label.iter().enumerate() {
            if raw.label[..i].contains(label) {
                return Err(self.problem("choices", format!("label {label:?} appears twice")));
            }
        }
        let key: String = self.take("answerKey")?;
        if !raw.label.contains(&key) {
            return Err(self.problem("answerKey", format!("{key:?} is not one of the choice labels {:?}", raw.label)));
        }
        let choices = raw.label.into_iter().zip(raw.text).map(|(label, text)| Choice { label, text }).collect();
        Ok((choices, key))
    }

    /// `endings` (at least two) and `label`, an index into them.
    fn endings_and_label(&mut self) -> Result<(Vec<String>, usize), TaskError> {
        let endings: Vec<String> = self.take("endings")?;
        if endings.len() < 2 {
            return Err(self.problem("endings", format!("{} endings, expected at least 2", endings.len())));
        }
        let last = i64::try_from(endings.len() - 1).unwrap_or(i64::MAX);
        let label = self.int_in("label", 0, last)?;
        let label = usize::try_from(label).map_err(|_| self.problem("label", format!("is {label}")))?;
        Ok((endings, label))
    }
}

/// Reads `columns` of `task`'s file in `dir` and turns each row into a `T` with `parse`.
fn read_rows<T>(
    task: Task,
    dir: &DataDir,
    columns: &[&str],
    parse: impl Fn(&mut Row<'_>) -> Result<T, TaskError>,
) -> Result<Vec<T>, TaskError> {
    let path = dir.file(task.relative_path())?;
    if !path.is_file() {
        return Err(TaskError::MissingFile { task, path });
    }
    let bad = |problem: String| DataError::Parquet { path: path.clone(), problem };
    let file = spindle_io::regular_file(&path).map_err(|io| DataError::Io { path: path.clone(), io })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let schema = builder.schema().clone();
    let mut indices = Vec::with_capacity(columns.len());
    for column in columns {
        let index = schema.index_of(column).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bad(format!("no column `{column}` (columns: {})", names.join(", ")))
        })?;
        indices.push(index);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder.with_projection(mask).build().map_err(|e| bad(e.to_string()))?;

    let mut out = Vec::new();
    let mut json = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        json.clear();
        let mut writer =
            arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(&mut json);
        writer.write(&batch).map_err(|e| bad(format!("cannot render rows as JSON: {e}")))?;
        writer.finish().map_err(|e| bad(format!("cannot render rows as JSON: {e}")))?;
        drop(writer);
        for object in serde_json::Deserializer::from_slice(&json).into_iter::<Map<String, Value>>() {
            let fields = object.map_err(|e| bad(format!("row {}: unreadable JSON rendering: {e}", out.len())))?;
            let mut row = Row { path: &path, index: out.len(), fields };
            out.push(parse(&mut row)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc as Shared;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

    fn data() -> DataDir {
        DataDir::resolve_from(None, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
    }

    /// A data directory in a temporary folder, with `task`'s file made of `columns`.
    fn fake(task: Task, columns: Vec<(&str, ArrayRef)>) -> (tempfile::TempDir, DataDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(task.relative_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let dir = DataDir::resolve_with(Some(t.path()), None, t.path()).unwrap();
        (t, dir, path)
    }

    fn strings(values: &[&str]) -> ArrayRef {
        Shared::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn names_round_trip_and_are_lm_eval_names() {
        let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["piqa", "boolq", "openbookqa", "arc_easy", "arc_challenge", "winogrande", "rte", "hellaswag", "hellaswag_full"]);
        for task in Task::ALL {
            assert_eq!(task.name().parse::<Task>().unwrap(), task);
            assert_eq!(task.to_string(), task.name());
        }
        let err = "arc".parse::<Task>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown task `arc` (known: piqa, boolq, openbookqa, arc_easy, arc_challenge, winogrande, rte, hellaswag, hellaswag_full)"
        );
    }

    #[test]
    fn row_counts_are_the_readmes() {
        let dir = data();
        let expected = [1838, 3270, 500, 2376, 1172, 1267, 277, 1000, 10042];
        for (task, rows) in Task::ALL.into_iter().zip(expected) {
            let records = load(task, &dir).unwrap();
            assert_eq!((records.task(), records.len()), (task, rows), "{task}");
        }
    }

    #[test]
    fn piqa_first_row() {
        let rows = load_piqa(&data()).unwrap();
        assert_eq!(
            rows[0],
            Piqa {
                goal: "How do I ready a guinea pig cage for it's new occupants?".into(),
                sol1: "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.".into(),
                sol2: "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.".into(),
                label: 0,
            }
        );
        assert_eq!(rows.iter().filter(|r| r.label == 1).count(), 928);
    }

    #[test]
    fn boolq_first_row_and_majority_share() {
        let rows = load_boolq(&data()).unwrap();
        let first = &rows[0];
        assert_eq!(first.question, "does ethanol take more energy make that produces");
        assert!(first.passage.starts_with("All biomass goes through at least some of these steps: it needs to be grown, collected, dried, fermented, distilled, and burned."));
        assert!(first.passage.ends_with("concluded that producing ethanol from corn uses much less petroleum than producing gasoline."));
        assert_eq!(first.passage.len(), 1368);
        assert_eq!((first.label, first.idx), (false, 0));
        let true_count = rows.iter().filter(|r| r.label).count();
        assert_eq!(true_count, 2033);
        // The README: 62.2 % true.
        assert_eq!((1000.0 * true_count as f64 / rows.len() as f64).round(), 622.0);
        assert!(rows.iter().enumerate().all(|(i, r)| r.idx == i as i64));
    }

    fn abcd(texts: &[&str]) -> Vec<Choice> {
        texts.iter().zip(["A", "B", "C", "D", "E"]).map(|(t, l)| Choice { label: l.into(), text: (*t).into() }).collect()
    }

    #[test]
    fn openbookqa_first_row_and_answer_keys() {
        let rows = load_openbookqa(&data()).unwrap();
        assert_eq!(
            rows[0],
            OpenBookQA {
                id: "8-343".into(),
                question_stem: "A person wants to start saving money so that they can afford a nice vacation at the end of the year. After looking over their budget and expenses, they decide the best way to save money is to".into(),
                choices: abcd(&["make more phone calls", "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"]),
                answer_key: "B".into(),
            }
        );
        assert_eq!(rows[0].answer_index(), Some(1));
        assert!(rows.iter().all(|r| r.answer_index().is_some() && r.choices.len() == 4));
    }

    #[test]
    fn arc_first_rows_and_answer_keys() {
        let easy = load_arc_easy(&data()).unwrap();
        assert_eq!(
            easy[0],
            Arc {
                id: "ARC-Easy-0".into(),
                question: "Which statement best explains why photosynthesis is the foundation of most food webs?".into(),
                choices: abcd(&[
                    "Sunlight is the source of energy for nearly all ecosystems.",
                    "Most ecosystems are found on land instead of in water.",
                    "Carbon dioxide is more available than other gases.",
                    "The producers in all ecosystems are plants."
                ]),
                answer_key: "A".into(),
            }
        );
        let challenge = load_arc_challenge(&data()).unwrap();
        assert_eq!(
            challenge[0],
            Arc {
                id: "ARC-Challenge-0".into(),
                question: "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?".into(),
                choices: abcd(&[
                    "Planetary density will decrease.",
                    "Planetary years will become longer.",
                    "Planetary days will become shorter.",
                    "Planetary gravity will become stronger."
                ]),
                answer_key: "C".into(),
            }
        );
        assert_eq!(challenge[0].answer_index(), Some(2));
        for rows in [&easy, &challenge] {
            assert!(rows.iter().all(|r| r.answer_index().is_some()));
        }
        // Choice counts as pyarrow sees them: 3, 4 or 5.
        let count = |rows: &[Arc], n| rows.iter().filter(|r| r.choices.len() == n).count();
        assert_eq!([count(&easy, 3), count(&easy, 4), count(&easy, 5)], [7, 2365, 4]);
        assert_eq!([count(&challenge, 3), count(&challenge, 4), count(&challenge, 5)], [4, 1165, 3]);
    }

    #[test]
    fn winogrande_first_row() {
        let rows = load_winogrande(&data()).unwrap();
        assert_eq!(
            rows[0],
            Winogrande {
                sentence: "Sarah was a much better surgeon than Maria so _ always got the easier cases.".into(),
                option1: "Sarah".into(),
                option2: "Maria".into(),
                answer: 2,
            }
        );
        assert_eq!(rows.iter().filter(|r| r.answer == 1).count(), 628);
    }

    #[test]
    fn rte_first_row() {
        let rows = load_rte(&data()).unwrap();
        assert_eq!(
            rows[0],
            Rte {
                sentence1: "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve Foundation.".into(),
                sentence2: "Christopher Reeve had an accident.".into(),
                label: 1,
                idx: 0,
            }
        );
        assert_eq!(rows.iter().filter(|r| r.label == 0).count(), 146);
    }

    #[test]
    fn hellaswag_first_rows() {
        let rows = load_hellaswag(&data()).unwrap();
        assert_eq!(
            rows[0],
            HellaSwag {
                ind: 20022,
                activity_label: "Pole vault".into(),
                ctx_a: "Pole vault is a sport where you run with a pole and stop and swing your body.".into(),
                ctx_b: "a few women".into(),
                ctx: "Pole vault is a sport where you run with a pole and stop and swing your body. a few women".into(),
                endings: vec![
                    "go down a rock and stop.".into(),
                    "watch from around a pole vault.".into(),
                    "are in the wading pool.".into(),
                    "are in the gym practicing to do this pole vault, trying to do their best.".into(),
                ],
                source_id: "activitynet~v_xftFhOCEqFs".into(),
                split: "val".into(),
                split_type: "indomain".into(),
                label: 3,
            }
        );
        assert_eq!(rows.iter().filter(|r| r.split_type == "zeroshot").count(), 171);
        let full = load_hellaswag_full(&data()).unwrap();
        assert_eq!(
            full[0],
            HellaSwagPreprocessed {
                query: "Roof shingle removal: A man is sitting on a roof. he".into(),
                endings: vec![
                    "is using wrap to wrap a pair of skis.".into(),
                    "is ripping level tiles off.".into(),
                    "is holding a rubik's cube.".into(),
                    "starts pulling up roofing on a roof.".into(),
                ],
                label: 3,
            }
        );
        assert!(rows.iter().all(|r| r.endings.len() == 4 && r.label < 4));
        assert!(full.iter().all(|r| r.endings.len() == 4 && r.label < 4));
        assert_eq!(full.iter().filter(|r| r.label == 2).count(), 2584);
    }

    #[test]
    fn a_missing_file_is_one_error_naming_the_path() {
        let t = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve_with(Some(t.path()), None, t.path()).unwrap();
        let err = load(Task::Piqa, &dir).unwrap_err();
        let path = t.path().join("tasks/piqa/validation-00000-of-00001.parquet");
        assert_eq!(err.to_string(), format!("{}: no such file (the data of task `piqa`)", path.display()));
    }

    #[test]
    fn an_out_of_range_answer_names_file_row_and_field() {
        let (_t, dir, path) = fake(
            Task::Winogrande,
            vec![
                ("sentence", strings(&["A _ b.", "C _ d."])),
                ("option1", strings(&["x", "y"])),
                ("option2", strings(&["z", "w"])),
                ("answer", strings(&["1", "3"])),
            ],
        );
        let err = load_winogrande(&dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: row 1, field `answer`: is 3, expected 1 or 2", path.display()));
    }

    #[test]
    fn a_wrong_typed_column_names_file_row_and_field() {
        let (_t, dir, path) = fake(
            Task::Piqa,
            vec![
                ("goal", Shared::new(Int64Array::from(vec![7])) as ArrayRef),
                ("sol1", strings(&["a"])),
                ("sol2", strings(&["b"])),
                ("label", Shared::new(Int64Array::from(vec![0])) as ArrayRef),
            ],
        );
        let err = load_piqa(&dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: row 0, field `goal`: invalid type: integer `7`, expected a string", path.display()));
        let (_t, dir, path) = fake(
            Task::Rte,
            vec![
                ("sentence1", strings(&["a"])),
                ("sentence2", strings(&["b"])),
                ("label", strings(&["entailment"])),
                ("idx", Shared::new(Int64Array::from(vec![0])) as ArrayRef),
            ],
        );
        let err = load_rte(&dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: row 0, field `label`: \"entailment\" is not an integer label", path.display()));
    }

    #[test]
    fn a_missing_column_and_a_bad_answer_key_are_named() {
        let (_t, dir, path) = fake(Task::Rte, vec![("sentence1", strings(&["a"])), ("label", strings(&["0"]))]);
        let err = load_rte(&dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: no column `sentence2` (columns: sentence1, label)", path.display()));

        let (_t, dir, path) = fake(
            Task::ArcEasy,
            vec![
                ("id", strings(&["q"])),
                ("question", strings(&["?"])),
                ("choices", choices(&[("A", "yes"), ("B", "no")])),
                ("answerKey", strings(&["C"])),
            ],
        );
        let err = load_arc_easy(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: row 0, field `answerKey`: \"C\" is not one of the choice labels [\"A\", \"B\"]", path.display())
        );
    }

    /// A one-row `choices` struct column {text: list<string>, label: list<string>}.
    fn choices(pairs: &[(&str, &str)]) -> ArrayRef {
        let mut text = ListBuilder::new(StringBuilder::new());
        let mut label = ListBuilder::new(StringBuilder::new());
        for (l, t) in pairs {
            text.values().append_value(t);
            label.values().append_value(l);
        }
        text.append(true);
        label.append(true);
        let (text, label): (ArrayRef, ArrayRef) = (Shared::new(text.finish()), Shared::new(label.finish()));
        Shared::new(arrow_array::StructArray::try_from(vec![("text", text), ("label", label)]).unwrap())
    }

    #[test]
    fn a_string_label_reads_like_an_integer_one() {
        let mut endings = ListBuilder::new(StringBuilder::new());
        for e in ["a", "b", "c", "d"] {
            endings.values().append_value(e);
        }
        endings.append(true);
        let (_t, dir, _path) = fake(
            Task::HellaSwagFull,
            vec![("query", strings(&["Q: x"])), ("endings", Shared::new(endings.finish()) as ArrayRef), ("label", strings(&["2"]))],
        );
        let rows = load_hellaswag_full(&dir).unwrap();
        assert_eq!(rows[0].label, 2);
    }
}
