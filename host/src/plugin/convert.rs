//! Between floe's [`Change`] and the WIT types plugins see: typed values out, edits back in.
//! Values keep their warehouse meaning both ways (a decimal stays exact text, a timestamp stays
//! ISO-8601), so a plugin that sets a column back to what it read changes nothing.

use std::sync::Arc;

use base64::Engine as _;
use bumpalo::Bump;
use serde_json::Value as Json;

use super::bindings::floe::plugin::types::{
    Change as WitChange, Edit, Field, Op as WitOp, Reads, ValueParam, ValueResult,
};
use crate::change::{Cell, Change, Column, ColumnType, Op, Row};

/// Which columns of a row image a plugin reads, remembered for the last few column lists seen
/// (the rows of a batch nearly always share one or two: `before` keeps the source's list when
/// an earlier plugin's edits gave `after` another).
pub struct Projection {
    reads: Reads,
    recent: Vec<(Arc<[Column]>, Vec<usize>)>,
}

/// How many column lists a projection remembers.
const RECENT_LISTS: usize = 4;

impl Projection {
    pub fn new(reads: Reads) -> Self {
        Projection {
            reads,
            recent: Vec::new(),
        }
    }

    /// Everything: every column and the `before` image.
    pub fn all() -> Self {
        Self::new(Reads {
            columns: None,
            before: true,
        })
    }

    /// The positions in `columns` of the columns the plugin reads (`None`: all of them).
    fn positions(&mut self, columns: &Arc<[Column]>) -> Option<&[usize]> {
        let wanted = self.reads.columns.as_ref()?;
        let at = match self
            .recent
            .iter()
            .position(|(c, _)| Arc::ptr_eq(c, columns))
        {
            Some(at) => at,
            None => {
                let positions = columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| wanted.iter().any(|w| **w == *c.name))
                    .map(|(i, _)| i)
                    .collect();
                if self.recent.len() >= RECENT_LISTS {
                    self.recent.remove(0);
                }
                self.recent.push((columns.clone(), positions));
                self.recent.len() - 1
            }
        };
        Some(&self.recent[at].1)
    }
}

/// Whether plugins see this change (truncates go straight to the sink).
pub fn reaches_plugins(change: &Change) -> bool {
    change.op != Op::Truncate
}

/// The plugin's view of one call's changes (`None` if one is a truncate, which plugins never
/// see).
pub struct WitCall<'a> {
    /// The key columns (`table.key`) and the row columns (`table.columns`) of the call.
    pub key: Vec<&'a str>,
    pub columns: Vec<&'a str>,
    pub changes: Vec<WitChange<'a>>,
}

/// Builds the plugin's view of one call: per change the key whole and the row images it reads,
/// each as values in the order of the call's column lists. Names and text are borrowed from
/// the changes; values that must be made (bytes, text of a non-text value) go to `arena`.
pub fn to_wit<'a>(
    changes: &[&'a Change],
    projection: &mut Projection,
    arena: &'a Bump,
) -> Option<WitCall<'a>> {
    let mut layout = Layout::default();
    let mut keys = KeyLayout::default();
    let mut out = Vec::with_capacity(changes.len());
    let send_before = projection.reads.before;
    // Each image's values land where its columns are in the call's list: worked out once per
    // column list (the rows of a call nearly always share one or two).
    let mut row = |row: &'a Row, layout: &mut Layout<'a>| -> &'a [Option<ValueParam<'a>>] {
        let (width, slots) = layout.slots(&row.columns, projection);
        let values = arena.alloc_slice_fill_with(width, |_| None::<ValueParam<'a>>);
        for &(from, to) in slots {
            values[to] = Some(cell(row, from, arena));
        }
        values
    };
    for change in changes {
        let op = match change.op {
            Op::Create => WitOp::Create,
            Op::Update => WitOp::Update,
            Op::Delete => WitOp::Delete,
            Op::Read => WitOp::Read,
            Op::Truncate => return None,
        };
        let before = match &change.before {
            Some(r) if send_before => Some(r),
            _ => None,
        };
        out.push(WitChange {
            op,
            key: keys.row(&change.key, arena),
            before: before.map(|r| row(r, &mut layout)),
            after: change.after.as_ref().map(|r| row(r, &mut layout)),
            lsn: change.position.lsn,
            source_ts_ms: change.source_ts_ms,
        });
    }
    // An image converted before a later one added a column is shorter than the list: pad it
    // (`none`: that image does not have the column).
    let pad =
        |values: &mut &'a [Option<ValueParam<'a>>], width: usize| {
            if values.len() < width {
                let have = values.len();
                *values = arena.alloc_slice_fill_with(width, |i| {
                    if i < have {
                        values[i].clone()
                    } else {
                        None
                    }
                });
            }
        };
    if layout.grew || keys.grew {
        let (width, key_width) = (layout.columns.len(), keys.names.len());
        for c in &mut out {
            pad(&mut c.key, key_width);
            if let Some(values) = c.before.as_mut() {
                pad(values, width);
            }
            if let Some(values) = c.after.as_mut() {
                pad(values, width);
            }
        }
    }
    Some(WitCall {
        key: keys.names,
        columns: layout.columns,
        changes: out,
    })
}

/// The key columns of one call, in the order first seen (a table's keys nearly always have
/// the same columns; the decoder shares their names).
#[derive(Default)]
struct KeyLayout<'a> {
    names: Vec<&'a str>,
    /// Whether a key after the first added a column (earlier keys must be padded).
    grew: bool,
}

impl<'a> KeyLayout<'a> {
    fn row(
        &mut self,
        key: &'a [(Arc<str>, Json)],
        arena: &'a Bump,
    ) -> &'a [Option<ValueParam<'a>>] {
        let at = |names: &[&str], name: &str| {
            names
                .iter()
                .position(|n| std::ptr::eq(*n, name) || *n == name)
        };
        for (name, _) in key {
            if at(&self.names, name).is_none() {
                self.grew |= !self.names.is_empty();
                self.names.push(name);
            }
        }
        let values = arena.alloc_slice_fill_with(self.names.len(), |_| None::<ValueParam<'a>>);
        for (name, v) in key {
            if let Some(i) = at(&self.names, name) {
                values[i] = Some(untyped(v, arena));
            }
        }
        values
    }
}

/// Per projected cell of a column list: (its position in the list, its position in the call's
/// columns).
type Slots = Vec<(usize, usize)>;

/// The columns of one call, and where the projected cells of each column list go.
#[derive(Default)]
struct Layout<'a> {
    columns: Vec<&'a str>,
    /// Per column list seen in this call: where its projected cells go.
    lists: Vec<(&'a Arc<[Column]>, Slots)>,
    /// Whether a list after the first added columns (earlier images must be padded).
    grew: bool,
}

impl<'a> Layout<'a> {
    /// The call's column count so far, and where the cells of `columns` go.
    fn slots(
        &mut self,
        columns: &'a Arc<[Column]>,
        projection: &mut Projection,
    ) -> (usize, &[(usize, usize)]) {
        let at = match self.lists.iter().position(|(c, _)| Arc::ptr_eq(c, columns)) {
            Some(at) => at,
            None => {
                let before = self.columns.len();
                let mut slots = Vec::new();
                let mut place = |from: usize| {
                    let name: &'a str = &columns[from].name;
                    let to = match self.columns.iter().position(|c| *c == name) {
                        Some(to) => to,
                        None => {
                            self.columns.push(name);
                            self.columns.len() - 1
                        }
                    };
                    slots.push((from, to));
                };
                match projection.positions(columns) {
                    Some(positions) => positions.iter().for_each(|&i| place(i)),
                    None => (0..columns.len()).for_each(place),
                }
                self.grew |= !self.lists.is_empty() && self.columns.len() > before;
                self.lists.push((columns, slots));
                self.lists.len() - 1
            }
        };
        (self.columns.len(), &self.lists[at].1)
    }
}

/// Cell `i` of `row` as a WIT value.
fn cell<'a>(row: &'a Row, i: usize, arena: &'a Bump) -> ValueParam<'a> {
    match row.cells.get(i) {
        Some(Cell::Value(v)) => typed(v, &row.columns[i].ty, arena),
        Some(Cell::Unchanged) => ValueParam::Unchanged,
        None => ValueParam::Null,
    }
}

/// A normalised JSON value of a column of type `ty` as a WIT value.
fn typed<'a>(v: &'a Json, ty: &ColumnType, arena: &'a Bump) -> ValueParam<'a> {
    if v.is_null() {
        return ValueParam::Null;
    }
    let text = || -> &'a str {
        match v {
            Json::String(s) => s,
            other => arena.alloc_str(&other.to_string()),
        }
    };
    match ty {
        ColumnType::Integer => v
            .as_i64()
            .map_or_else(|| untyped(v, arena), ValueParam::Integer),
        ColumnType::Float => v
            .as_f64()
            .map_or_else(|| untyped(v, arena), ValueParam::Float),
        ColumnType::Boolean => v
            .as_bool()
            .map_or_else(|| untyped(v, arena), ValueParam::Boolean),
        ColumnType::Decimal { .. } => ValueParam::Decimal(text()),
        ColumnType::Text => ValueParam::Text(text()),
        ColumnType::Binary => match v {
            Json::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_or_else(
                    |_| ValueParam::Text(s),
                    |b| ValueParam::Bytes(arena.alloc_slice_copy(&b)),
                ),
            other => untyped(other, arena),
        },
        ColumnType::Date => ValueParam::Date(text()),
        ColumnType::Time => ValueParam::Time(text()),
        ColumnType::Timestamp => ValueParam::Timestamp(text()),
        ColumnType::TimestampTz => ValueParam::Timestamptz(text()),
        ColumnType::Json => ValueParam::Json(text()),
        ColumnType::Unknown => untyped(v, arena),
    }
}

/// A JSON value whose column type is unknown (schemaless events, keys).
fn untyped<'a>(v: &'a Json, arena: &'a Bump) -> ValueParam<'a> {
    match v {
        Json::Null => ValueParam::Null,
        Json::Bool(b) => ValueParam::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ValueParam::Integer(i),
            None => ValueParam::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ValueParam::Text(s),
        other => ValueParam::Json(arena.alloc_str(&other.to_string())),
    }
}

/// The column type a new column gets from a value a plugin set (`Unknown` for NULL and
/// unchanged: the type is then the one the column had before).
fn wit_type(v: &ValueResult) -> ColumnType {
    match v {
        ValueResult::Unchanged | ValueResult::Null => ColumnType::Unknown,
        ValueResult::Boolean(_) => ColumnType::Boolean,
        ValueResult::Integer(_) => ColumnType::Integer,
        ValueResult::Float(_) => ColumnType::Float,
        ValueResult::Decimal(s) => ColumnType::Decimal {
            precision: None,
            scale: s.split_once('.').map_or(0, |(_, frac)| frac.len() as u32),
        },
        ValueResult::Text(_) => ColumnType::Text,
        ValueResult::Bytes(_) => ColumnType::Binary,
        ValueResult::Date(_) => ColumnType::Date,
        ValueResult::Time(_) => ColumnType::Time,
        ValueResult::Timestamp(_) => ColumnType::Timestamp,
        ValueResult::Timestamptz(_) => ColumnType::TimestampTz,
        ValueResult::Json(_) => ColumnType::Json,
    }
}

/// A WIT value as a cell.
fn wit_cell(v: ValueResult) -> Cell {
    Cell::Value(match v {
        ValueResult::Unchanged => return Cell::Unchanged,
        ValueResult::Null => Json::Null,
        ValueResult::Boolean(b) => Json::Bool(b),
        ValueResult::Integer(i) => Json::from(i),
        ValueResult::Float(f) => serde_json::Number::from_f64(f)
            .map_or_else(|| Json::String(f.to_string()), Json::Number),
        ValueResult::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ValueResult::Decimal(s)
        | ValueResult::Text(s)
        | ValueResult::Date(s)
        | ValueResult::Time(s)
        | ValueResult::Timestamp(s)
        | ValueResult::Timestamptz(s)
        | ValueResult::Json(s) => Json::String(s),
    })
}

/// What one list of edits did to one column list: the rows a plugin edits the same way (the
/// same columns set, with values of the same types) replay it instead of working it out again.
struct Replay {
    input: Arc<[Column]>,
    /// Per edit: set (with the value's type) or remove, and the column name.
    edits: Vec<(Option<ColumnType>, Box<str>)>,
    steps: Vec<Step>,
    output: Arc<[Column]>,
}

/// Where one edit lands in the row's cells.
#[derive(Clone, Copy)]
enum Step {
    Set(usize),
    Push,
    Remove(usize),
    Nothing,
}

impl Replay {
    fn matches(&self, input: &Arc<[Column]>, edits: &[Edit]) -> bool {
        Arc::ptr_eq(&self.input, input)
            && self.edits.len() == edits.len()
            && self.edits.iter().zip(edits).all(|((ty, name), e)| match e {
                Edit::Set(f) => *f.name == **name && ty.as_ref() == Some(&wit_type(&f.value)),
                Edit::Remove(n) => ty.is_none() && **n == **name,
            })
    }
}

/// Remembers the column lists edits produced, so the rows of a batch that gained the same
/// columns share one list (the sink reads rows sharing their plan's list by position), and how
/// recent edit lists applied.
#[derive(Default)]
pub struct ColumnCache {
    lists: Vec<Arc<[Column]>>,
    replays: Vec<Replay>,
    /// The type each added column had when a plugin last set it to a non-NULL value, so a
    /// column set to NULL keeps its type. (A replayed edit list does not update it: it holds
    /// the type from when that list was first worked out.)
    learned: std::collections::HashMap<String, ColumnType>,
}

impl ColumnCache {
    fn intern(&mut self, columns: Vec<Column>) -> Arc<[Column]> {
        if let Some(shared) = self.lists.iter().find(|c| ***c == *columns) {
            return shared.clone();
        }
        let shared: Arc<[Column]> = columns.into();
        if self.lists.len() >= 64 {
            self.lists.clear();
        }
        self.lists.push(shared.clone());
        shared
    }
}

/// Applies a plugin's edits to a change's `after` image (a change without one is left alone).
pub fn apply_edits(change: &mut Change, edits: Vec<Edit>, cache: &mut ColumnCache) {
    let Some(after) = change.after.as_mut() else {
        return;
    };
    if edits.is_empty() {
        return;
    }
    if let Some(r) = cache
        .replays
        .iter()
        .find(|r| r.matches(&after.columns, &edits))
    {
        for (edit, step) in edits.into_iter().zip(&r.steps) {
            match (edit, *step) {
                (Edit::Set(f), Step::Set(i)) => after.cells[i] = wit_cell(f.value),
                (Edit::Set(f), Step::Push) => after.cells.push(wit_cell(f.value)),
                (Edit::Remove(_), Step::Remove(i)) => {
                    after.cells.remove(i);
                }
                _ => {}
            }
        }
        after.columns = r.output.clone();
        return;
    }
    let input = after.columns.clone();
    let mut keys = Vec::with_capacity(edits.len());
    let mut steps = Vec::with_capacity(edits.len());
    let mut columns: Vec<Column> = after.columns.to_vec();
    let mut replayable = true;
    for edit in edits {
        match edit {
            Edit::Set(Field { name, value }) => {
                let mut ty = wit_type(&value);
                let typed_by_value = ty != ColumnType::Unknown;
                keys.push((Some(ty.clone()), Box::from(name.as_str())));
                let cell = wit_cell(value);
                if ty == ColumnType::Unknown {
                    ty = cache
                        .learned
                        .get(&name)
                        .cloned()
                        .unwrap_or(ColumnType::Unknown);
                } else if cache.learned.get(&name) != Some(&ty) {
                    cache.learned.insert(name.clone(), ty.clone());
                }
                match columns.iter().position(|c| *c.name == *name) {
                    // An existing column keeps its declared type: the value is loaded into it.
                    Some(i) => {
                        after.cells[i] = cell;
                        steps.push(Step::Set(i));
                    }
                    None => {
                        // A new column typed from what was learned (its value is NULL): not
                        // replayed, since what is learned may change.
                        replayable &= typed_by_value;
                        columns.push(Column {
                            name: name.into(),
                            ty,
                            optional: true,
                        });
                        after.cells.push(cell);
                        steps.push(Step::Push);
                    }
                }
            }
            Edit::Remove(name) => {
                keys.push((None, Box::from(name.as_str())));
                match columns.iter().position(|c| *c.name == *name) {
                    Some(i) => {
                        columns.remove(i);
                        after.cells.remove(i);
                        steps.push(Step::Remove(i));
                    }
                    None => steps.push(Step::Nothing),
                }
            }
        }
    }
    if *columns != *after.columns {
        after.columns = cache.intern(columns);
    }
    if !replayable {
        return;
    }
    if cache.replays.len() >= 16 {
        cache.replays.clear();
    }
    cache.replays.push(Replay {
        input,
        edits: keys,
        steps,
        output: after.columns.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{KafkaPosition, SourcePosition, TableId};

    fn change() -> Change {
        let columns: Arc<[Column]> = vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Integer,
                optional: false,
            },
            Column {
                name: "amount".into(),
                ty: ColumnType::Decimal {
                    precision: Some(12),
                    scale: 2,
                },
                optional: true,
            },
            Column {
                name: "note".into(),
                ty: ColumnType::Text,
                optional: true,
            },
        ]
        .into();
        Change {
            table: TableId {
                schema: "public".into(),
                table: "t".into(),
            },
            op: Op::Update,
            key: vec![("id".into(), Json::from(7))],
            before: None,
            after: Some(Row {
                columns,
                cells: vec![
                    Cell::Value(Json::from(7)),
                    Cell::Value(Json::String("12.50".into())),
                    Cell::Unchanged,
                ],
            }),
            position: SourcePosition::streamed(42, None),
            source_ts_ms: 1,
            kafka: KafkaPosition::default(),
        }
    }

    /// The column names of a call and each image as (column, value) pairs, `none`s left out.
    fn named<'a>(columns: &[&'a str], image: Option<&'a [Option<ValueParam<'a>>]>) -> Vec<&'a str> {
        let image = image.expect("image");
        assert_eq!(image.len(), columns.len(), "one entry per column");
        columns
            .iter()
            .zip(image)
            .filter(|(_, v)| v.is_some())
            .map(|(c, _)| *c)
            .collect()
    }

    #[test]
    fn values_keep_their_types() {
        let (c, arena) = (change(), Bump::new());
        let WitCall {
            columns,
            changes: w,
            ..
        } = to_wit(&[&c], &mut Projection::all(), &arena).expect("no truncate");
        assert_eq!(columns, ["id", "amount", "note"]);
        let after = w[0].after.expect("after");
        assert!(matches!(after[0], Some(ValueParam::Integer(7))));
        assert!(matches!(after[1], Some(ValueParam::Decimal("12.50"))));
        assert!(matches!(after[2], Some(ValueParam::Unchanged)));
        assert!(matches!(w[0].key[0], Some(ValueParam::Integer(7))));
        assert_eq!(w[0].lsn, 42);
        let mut t = change();
        t.op = Op::Truncate;
        assert!(to_wit(&[&c, &t], &mut Projection::all(), &arena).is_none());
    }

    #[test]
    fn only_the_columns_a_plugin_reads_are_sent() {
        let mut c = change();
        c.before = c.after.clone();
        let arena = Bump::new();
        let mut projection = Projection::new(Reads {
            columns: Some(vec!["note".into(), "id".into(), "absent".into()]),
            before: false,
        });
        for _ in 0..2 {
            // The second time from the remembered positions.
            let WitCall {
                columns,
                changes: w,
                ..
            } = to_wit(&[&c, &c], &mut projection, &arena).expect("no truncate");
            assert_eq!(columns, ["id", "note"], "row order, only what it reads");
            assert!(matches!(
                w[1].after.expect("after")[0],
                Some(ValueParam::Integer(7))
            ));
            assert!(w[0].before.is_none(), "before not read");
            assert_eq!(w[0].key.len(), 1, "the key comes whole");
        }
        let WitCall { changes: w, .. } =
            to_wit(&[&c], &mut Projection::all(), &arena).expect("no truncate");
        assert_eq!(w[0].before.expect("before").len(), 3);
        // `before` with another column list than `after` (an earlier plugin added a column):
        // each image's values land under their own column names, both lists remembered.
        let mut before = c.after.clone().expect("after");
        let mut columns = before.columns.to_vec();
        columns.reverse();
        before.columns = columns.into();
        before.cells.reverse();
        c.before = Some(before);
        let mut projection = Projection::new(Reads {
            columns: Some(vec!["note".into(), "id".into()]),
            before: true,
        });
        for _ in 0..2 {
            let WitCall {
                columns,
                changes: w,
                ..
            } = to_wit(&[&c], &mut projection, &arena).expect("no truncate");
            let (before, after) = (w[0].before.expect("before"), w[0].after.expect("after"));
            let id = columns.iter().position(|c| *c == "id").expect("id");
            assert!(matches!(before[id], Some(ValueParam::Integer(7))));
            assert!(matches!(after[id], Some(ValueParam::Integer(7))));
            let note = columns.iter().position(|c| *c == "note").expect("note");
            assert!(matches!(before[note], Some(ValueParam::Unchanged)));
        }
        assert_eq!(projection.recent.len(), 2);
    }

    #[test]
    fn keys_are_rows_of_the_calls_key_columns() {
        // The primary key changed between two changes of a call: `table.key` has both key
        // columns, and each key `none` where it does not have one.
        let first = change();
        let mut second = change();
        second.key = vec![
            ("code".into(), Json::from("x")),
            ("id".into(), Json::from(8)),
        ];
        let arena = Bump::new();
        let call = to_wit(&[&first, &second], &mut Projection::all(), &arena).expect("no truncate");
        assert_eq!(call.key, ["id", "code"]);
        let keys: Vec<_> = call.changes.iter().map(|c| c.key).collect();
        assert!(matches!(keys[0], [Some(ValueParam::Integer(7)), None]));
        assert!(matches!(
            keys[1],
            [Some(ValueParam::Integer(8)), Some(ValueParam::Text("x"))]
        ));
    }

    #[test]
    fn images_without_a_column_of_the_call_have_none_there() {
        // The second change's `after` gained a column (an earlier plugin set it): the call's
        // columns are the union, and the first change's image is padded with `none`.
        let first = change();
        let mut second = change();
        let after = second.after.as_mut().expect("after");
        let mut columns = after.columns.to_vec();
        columns.push(Column {
            name: "band".into(),
            ty: ColumnType::Text,
            optional: true,
        });
        after.columns = columns.into();
        after.cells.push(Cell::Value(Json::from("small")));
        let arena = Bump::new();
        let WitCall {
            columns,
            changes: w,
            ..
        } = to_wit(&[&first, &second], &mut Projection::all(), &arena).expect("no truncate");
        assert_eq!(columns, ["id", "amount", "note", "band"]);
        assert_eq!(named(&columns, w[0].after), ["id", "amount", "note"]);
        assert_eq!(
            named(&columns, w[1].after),
            ["id", "amount", "note", "band"]
        );
        assert!(matches!(
            w[1].after.expect("after")[3],
            Some(ValueParam::Text("small"))
        ));
    }

    #[test]
    fn edits_set_add_and_remove_columns_sharing_lists() {
        let mut cache = ColumnCache::default();
        let edits = || {
            vec![
                Edit::Set(Field {
                    name: "band".into(),
                    value: ValueResult::Text("small".into()),
                }),
                Edit::Set(Field {
                    name: "amount".into(),
                    value: ValueResult::Decimal("13.00".into()),
                }),
                Edit::Remove("note".into()),
            ]
        };
        // Rows decoded against one schema share their column list.
        let row = change();
        let (mut a, mut b) = (row.clone(), row.clone());
        apply_edits(&mut a, edits(), &mut cache);
        apply_edits(&mut b, edits(), &mut cache);
        let (ra, rb) = (a.after.expect("after"), b.after.expect("after"));
        let names: Vec<&str> = ra.columns.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["id", "amount", "band"]);
        assert_eq!(
            ra.columns[1].ty,
            ColumnType::Decimal {
                precision: Some(12),
                scale: 2
            }
        );
        assert_eq!(ra.columns[2].ty, ColumnType::Text);
        assert_eq!(ra.cells[1], Cell::Value(Json::String("13.00".into())));
        assert!(Arc::ptr_eq(&ra.columns, &rb.columns));
        assert_eq!(
            ra.cells, rb.cells,
            "the second row replays the first's edits"
        );
        assert_eq!(cache.replays.len(), 1);
        // Other value types for the same columns are worked out again, not replayed.
        let mut c = row.clone();
        let mut other = edits();
        other[0] = Edit::Set(Field {
            name: "band".into(),
            value: ValueResult::Integer(3),
        });
        apply_edits(&mut c, other, &mut cache);
        let rc = c.after.expect("after");
        assert_eq!(rc.columns[2].ty, ColumnType::Integer);
        assert_eq!(rc.cells[2], Cell::Value(Json::from(3)));
        assert_eq!(cache.replays.len(), 2);
    }
}
