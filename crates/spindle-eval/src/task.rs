//! Zero-shot tasks as versioned data: `eval/tasks/<name>.toml` says which dataset a task reads, how
//! a row becomes a prompt and its choices (templates over the row's fields), which choice is
//! gold, and which metrics lm-evaluation-harness reports for it. This module turns a spec and a
//! row into an [`Item`]: the (context, continuation) pairs to score, exactly as lm-eval builds its
//! requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use spindle_data::tasks::Task;

use crate::EvalError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawChoices {
    /// One template per choice.
    Templates(Vec<String>),
    /// Fixed choice strings.
    List(Vec<String>),
    /// A field holding the list of choices.
    From(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGold {
    field: Option<String>,
    index_of: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartial {
    sentence: String,
    options: Vec<String>,
    answer: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskSpec {
    name: String,
    version: u32,
    dataset: String,
    text: Option<String>,
    choices: Option<RawChoices>,
    gold: Option<RawGold>,
    partial: Option<RawPartial>,
    preprocess: Option<String>,
    target_delimiter: Option<String>,
    metrics: Vec<String>,
}

/// Where a task's choices come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceSource {
    Templates(Vec<String>),
    List(Vec<String>),
    Field(String),
}

/// Which choice is gold.
#[derive(Debug, Clone, PartialEq)]
pub enum GoldSource {
    /// An integer (or boolean) field holding the index.
    Field(String),
    /// The position of the (left-stripped) `key` field's value in the `list` field.
    IndexOf { list: String, key: String },
}

/// Text clean-up applied to the prompt and each choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocess {
    None,
    /// lm-eval's hellaswag `preprocess`: strip, " [title]" → ". ", drop `[...]`, "  " → " ".
    HellaSwag,
}

/// How requests are formed.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// One context, one continuation per choice.
    MultipleChoice { text: String, choices: ChoiceSource, gold: GoldSource },
    /// lm-eval's multiple-input form (WinoGrande): each option fills the blank of `sentence` to
    /// make a context; the text after the blank is the shared continuation.
    Partial { sentence: String, options: Vec<String>, answer: String },
}

/// A resolved task specification.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    pub version: u32,
    pub dataset: Task,
    pub kind: TaskKind,
    pub preprocess: Preprocess,
    pub target_delimiter: String,
    pub acc_norm: bool,
    /// The file it was read from.
    pub path: PathBuf,
}

/// One scored item: the requests, the choice strings (for `acc_norm`) and the gold index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// One (context, continuation) pair per choice.
    pub requests: Vec<(String, String)>,
    /// The choice strings as lm-eval's `doc_to_choice` gives them.
    pub choices: Vec<String>,
    pub gold: usize,
}

/// A TOML error on one line: `line L, column C: message` (the `toml` crate's own rendering is
/// several lines, with the source line and a caret).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl TaskSpec {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<TaskSpec, EvalError> {
        let text = spindle_io::read_to_string(path).map_err(|io| EvalError::Io { path: path.to_path_buf(), io })?;
        Self::from_toml(path, &text)
    }

    /// Parses spec text; `path` names it in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<TaskSpec, EvalError> {
        let bad = |problem: String| EvalError::TaskSpec { path: path.to_path_buf(), problem };
        let raw: RawTaskSpec = toml::from_str(text).map_err(|e| bad(toml_problem(text, &e)))?;
        let dataset: Task = raw.dataset.parse().map_err(|e: spindle_data::tasks::TaskError| bad(e.to_string()))?;
        let kind = match (raw.text, raw.choices, raw.gold, raw.partial) {
            (Some(text), Some(choices), Some(gold), None) => {
                let choices = match choices {
                    RawChoices::Templates(t) => ChoiceSource::Templates(t),
                    RawChoices::List(l) => ChoiceSource::List(l),
                    RawChoices::From(f) => ChoiceSource::Field(f),
                };
                let gold = match (gold.field, gold.index_of, gold.key) {
                    (Some(f), None, None) => GoldSource::Field(f),
                    (None, Some(list), Some(key)) => GoldSource::IndexOf { list, key },
                    _ => return Err(bad("gold must be { field = ... } or { index_of = ..., key = ... }".into())),
                };
                TaskKind::MultipleChoice { text, choices, gold }
            }
            (None, None, None, Some(p)) => TaskKind::Partial { sentence: p.sentence, options: p.options, answer: p.answer },
            _ => return Err(bad("a task has either text, choices and gold, or partial".into())),
        };
        let preprocess = match raw.preprocess.as_deref() {
            None | Some("none") => Preprocess::None,
            Some("hellaswag") => Preprocess::HellaSwag,
            Some(other) => return Err(bad(format!("unknown preprocess {other:?} (known: none, hellaswag)"))),
        };
        let mut acc_norm = false;
        for m in &raw.metrics {
            match m.as_str() {
                "acc" => {}
                "acc_norm" => acc_norm = true,
                other => return Err(bad(format!("unknown metric {other:?} (known: acc, acc_norm)"))),
            }
        }
        if !raw.metrics.iter().any(|m| m == "acc") {
            return Err(bad("every task reports acc".into()));
        }
        Ok(TaskSpec {
            name: raw.name,
            version: raw.version,
            dataset,
            kind,
            preprocess,
            target_delimiter: raw.target_delimiter.unwrap_or_else(|| " ".into()),
            acc_norm,
            path: path.to_path_buf(),
        })
    }

    fn clean(&self, s: String) -> String {
        match self.preprocess {
            Preprocess::None => s,
            Preprocess::HellaSwag => hellaswag_preprocess(&s),
        }
    }

    /// The requests of one dataset row (`row` is the record as JSON; `index` names it in errors).
    pub fn item(&self, row: &Value, index: usize) -> Result<Item, EvalError> {
        let bad = |problem: String| EvalError::Item { task: self.name.clone(), index, problem };
        match &self.kind {
            TaskKind::MultipleChoice { text, choices, gold } => {
                let context = self.clean(render(text, row).map_err(bad)?);
                let choices: Vec<String> = match choices {
                    ChoiceSource::Templates(t) => t.iter().map(|t| render(t, row)).collect::<Result<_, _>>().map_err(bad)?,
                    ChoiceSource::List(l) => l.clone(),
                    ChoiceSource::Field(f) => lookup(row, f)
                        .as_ref()
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad(format!("field `{f}` is not a list")))?
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(format!("field `{f}` holds a non-string"))))
                        .collect::<Result<_, _>>()?,
                };
                let choices: Vec<String> = choices.into_iter().map(|c| self.clean(c)).collect();
                let gold = match gold {
                    GoldSource::Field(f) => match lookup(row, f) {
                        Some(Value::Bool(b)) => usize::from(b),
                        Some(v) => v.as_u64().map(|g| g as usize).ok_or_else(|| bad(format!("field `{f}` is not an index")))?,
                        None => return Err(bad(format!("no field `{f}`"))),
                    },
                    GoldSource::IndexOf { list, key } => {
                        let key_value = lookup(row, key);
                        let key_value =
                            key_value.as_ref().and_then(Value::as_str).ok_or_else(|| bad(format!("no string field `{key}`")))?;
                        let labels = lookup(row, list);
                        let labels =
                            labels.as_ref().and_then(Value::as_array).ok_or_else(|| bad(format!("field `{list}` is not a list")))?;
                        labels
                            .iter()
                            .position(|l| l.as_str() == Some(key_value.trim_start()))
                            .ok_or_else(|| bad(format!("`{key_value}` is not in `{list}`")))?
                    }
                };
                if gold >= choices.len() {
                    return Err(bad(format!("gold {gold} but {} choices", choices.len())));
                }
                let requests = choices.iter().map(|c| (context.clone(), format!("{}{c}", self.target_delimiter))).collect();
                Ok(Item { requests, choices, gold })
            }
            TaskKind::Partial { sentence, options, answer } => {
                let sentence = lookup(row, sentence);
                let sentence = sentence.as_ref().and_then(Value::as_str).ok_or_else(|| bad("no string sentence field".to_owned()))?;
                let blank = sentence.find('_').ok_or_else(|| bad("the sentence has no blank `_`".into()))?;
                let continuation = sentence[blank + 1..].trim();
                let contexts: Vec<String> = options
                    .iter()
                    .map(|o| {
                        lookup(row, o)
                            .as_ref()
                            .and_then(Value::as_str)
                            .map(|o| format!("{}{o}", &sentence[..blank]))
                            .ok_or_else(|| bad(format!("no string field `{o}`")))
                    })
                    .collect::<Result<_, _>>()?;
                let gold = match lookup(row, answer) {
                    Some(v) => v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())),
                    None => None,
                }
                .filter(|&a| a >= 1 && a as usize <= contexts.len())
                .ok_or_else(|| bad(format!("field `{answer}` is not an option number")))? as usize
                    - 1;
                let requests = contexts.iter().map(|c| (c.clone(), format!("{}{continuation}", self.target_delimiter))).collect();
                Ok(Item { requests, choices: contexts, gold })
            }
        }
    }
}

/// A dotted field path into a JSON row. Through a list, a key maps over its elements:
/// `choices.text` of `[{"text": "a"}, {"text": "b"}]` is `["a", "b"]`.
fn lookup(row: &Value, path: &str) -> Option<Value> {
    path.split('.').try_fold(row.clone(), |v, key| match v {
        Value::Array(items) => items.iter().map(|i| i.get(key).cloned()).collect::<Option<Vec<_>>>().map(Value::Array),
        other => other.get(key).cloned(),
    })
}

/// `{field}` and `{field|capitalize}` substitution (Python's `str.capitalize`: first character
/// upper-cased, the rest lower-cased).
fn render(template: &str, row: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in template {template:?}"))? + open;
        let spec = &rest[open + 1..close];
        let (path, filter) = spec.split_once('|').map_or((spec, None), |(p, f)| (p, Some(f)));
        let value = match lookup(row, path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => return Err(format!("no text field `{path}`")),
        };
        match filter {
            None => out.push_str(&value),
            Some("capitalize") => {
                let mut chars = value.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(&chars.as_str().to_lowercase());
                }
            }
            Some(other) => return Err(format!("unknown filter `{other}`")),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// lm-eval's hellaswag `preprocess`: `text.strip()`, `" [title]"` → `". "`, every `[...]` that does
/// not span a newline removed (`re.sub("\\[.*?\\]", "", text)`), then `"  "` → `" "`.
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(end) if after.as_bytes()[end] == b']' => {
                out.push_str(&rest[..open]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 1]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// The task specs of `eval/tasks/`, compiled into the binary so that it runs from anywhere; the
/// files in the repository are the source of truth (a test keeps the two equal).
pub fn builtin_specs() -> Result<BTreeMap<String, TaskSpec>, EvalError> {
    const FILES: [(&str, &str); 8] = [
        ("arc_challenge.toml", include_str!("../../../eval/tasks/arc_challenge.toml")),
        ("arc_easy.toml", include_str!("../../../eval/tasks/arc_easy.toml")),
        ("boolq.toml", include_str!("../../../eval/tasks/boolq.toml")),
        ("hellaswag.toml", include_str!("../../../eval/tasks/hellaswag.toml")),
        ("openbookqa.toml", include_str!("../../../eval/tasks/openbookqa.toml")),
        ("piqa.toml", include_str!("../../../eval/tasks/piqa.toml")),
        ("rte.toml", include_str!("../../../eval/tasks/rte.toml")),
        ("winogrande.toml", include_str!("../../../eval/tasks/winogrande.toml")),
    ];
    let mut specs = BTreeMap::new();
    for (file, text) in FILES {
        let spec = TaskSpec::from_toml(&Path::new("eval/tasks").join(file), text)?;
        specs.insert(spec.name.clone(), spec);
    }
    Ok(specs)
}

/// Every `*.toml` spec in `dir`, by task name.
pub fn load_specs(dir: &Path) -> Result<BTreeMap<String, TaskSpec>, EvalError> {
    let entries = std::fs::read_dir(dir).map_err(|io| EvalError::Io { path: dir.to_path_buf(), io })?;
    let mut specs = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|io| EvalError::Io { path: dir.to_path_buf(), io })?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = TaskSpec::from_file(&path)?;
            specs.insert(spec.name.clone(), spec);
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str) -> TaskSpec {
        TaskSpec::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/tasks").join(format!("{name}.toml"))).unwrap()
    }

    #[test]
    fn every_committed_spec_loads_and_is_built_in() {
        let specs = load_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/tasks")).unwrap();
        let names: Vec<&str> = specs.keys().map(String::as_str).collect();
        assert_eq!(names, ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "rte", "winogrande"]);
        assert!(specs.values().all(|s| s.version == 1));
        let builtin = builtin_specs().unwrap();
        assert_eq!(
            builtin.keys().collect::<Vec<_>>(),
            specs.keys().collect::<Vec<_>>(),
            "a new eval/tasks file must be added to builtin_specs"
        );
        for (name, spec) in &specs {
            assert_eq!(TaskSpec { path: spec.path.clone(), ..builtin[name].clone() }, *spec, "{name}");
        }
    }

    #[test]
    fn multiple_choice_requests_put_the_delimiter_before_each_choice() {
        let item = spec("piqa").item(&json!({"goal": "Open a jar", "sol1": "twist", "sol2": "bite", "label": 1}), 0).unwrap();
        assert_eq!(
            item.requests,
            [
                ("Question: Open a jar\nAnswer:".to_owned(), " twist".to_owned()),
                ("Question: Open a jar\nAnswer:".to_owned(), " bite".to_owned())
            ]
        );
        assert_eq!((item.choices.clone(), item.gold), (vec!["twist".to_owned(), "bite".to_owned()], 1));
        let item = spec("boolq").item(&json!({"passage": "P.", "question": "is it", "label": true}), 0).unwrap();
        assert_eq!(item.requests[1], ("P.\nQuestion: is it?\nAnswer:".to_owned(), " yes".to_owned()));
        assert_eq!(item.gold, 1);
        let arc = json!({"question": "Q?", "choices": [{"label": "A", "text": "a"}, {"label": "B", "text": "b"}, {"label": "C", "text": "c"}], "answer_key": "C"});
        let item = spec("arc_easy").item(&arc, 3).unwrap();
        assert_eq!((item.choices.clone(), item.gold), (vec!["a".to_owned(), "b".to_owned(), "c".to_owned()], 2));
        assert_eq!(item.requests[2], ("Question: Q?\nAnswer:".to_owned(), " c".to_owned()));
        let err = spec("openbookqa")
            .item(&json!({"question_stem": "Q", "choices": [{"label": "A", "text": "a"}], "answer_key": "D"}), 5)
            .unwrap_err();
        assert_eq!(err.to_string(), "task openbookqa, item 5: `D` is not in `choices.label`");
    }

    #[test]
    fn winogrande_is_partial_scoring() {
        let row = json!({"sentence": "Sarah was a better surgeon than Maria so _ always got the harder cases.", "option1": "Sarah", "option2": "Maria", "answer": 1});
        let item = spec("winogrande").item(&row, 0).unwrap();
        assert_eq!(
            item.requests[0],
            ("Sarah was a better surgeon than Maria so Sarah".to_owned(), " always got the harder cases.".to_owned())
        );
        assert_eq!(item.requests[1].0, "Sarah was a better surgeon than Maria so Maria");
        assert_eq!(item.gold, 0);
        let err = spec("winogrande").item(&json!({"sentence": "no blank", "option1": "a", "option2": "b", "answer": 1}), 7).unwrap_err();
        assert_eq!(err.to_string(), "task winogrande, item 7: the sentence has no blank `_`");
    }

    #[test]
    fn hellaswag_preprocessing_matches_lm_eval() {
        assert_eq!(hellaswag_preprocess("  Hi [title] How to [step] do it  now [x\n] "), "Hi. How to do it now [x\n]");
        let row = json!({"activity_label": "Baking", "ctx_a": "A man mixes flour.", "ctx_b": "he THEN", "endings": ["adds [header] eggs.", "sleeps."], "label": 0});
        let item = spec("hellaswag").item(&row, 0).unwrap();
        assert_eq!(item.requests[0], ("Baking: A man mixes flour. He then".to_owned(), " adds eggs.".to_owned()));
    }

    #[test]
    fn bad_specs_are_named() {
        let p = Path::new("eval/tasks/x.toml");
        let err =
            TaskSpec::from_toml(p, "name = \"x\"\nversion = 1\ndataset = \"piqa\"\ntext = \"{goal}\"\nmetrics = [\"acc\"]\n").unwrap_err();
        assert_eq!(err.to_string(), "eval/tasks/x.toml: a task has either text, choices and gold, or partial");
        let err = TaskSpec::from_toml(p, "name = \"x\"\nversion = 1\ndataset = \"squad\"\nmetrics = [\"acc\"]\n").unwrap_err();
        assert!(err.to_string().starts_with("eval/tasks/x.toml: unknown task `squad` (known: piqa, "), "{err}");
        // TOML syntax errors are one line with a position.
        let err = TaskSpec::from_toml(p, "name = \"x\"\nversion = = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("eval/tasks/x.toml: line 2, column 11: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
