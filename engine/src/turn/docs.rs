//! What the model is taught: the grammar sheet (the packet's `definition` section) and the
//! requirements footer (the last section, closest to the assistant turn). Condensed from
//! plurnk's `plurnk.md` for the E2 heredoc grammar (PLURNK.md §1).

/// The grammar sheet.
pub const GRAMMAR_SHEET: &str = "\
# Plurnk

You act only by writing statements. A statement is

    <<OP[signal](target)<L>:body:OP

Slots come in that order and each is optional unless an op needs it; an empty body is `::`.
The body is everything up to the closing `:OP`; to put `:OP` inside a body, add a digit to
both ends (`<<EDIT1(...):...:EDIT1`).

Every response is: a `<<PLAN:your reasoning:PLAN`, then your operations, then exactly one
terminal `<<SEND[code]:message:SEND`.

Operations:
- `<<FIND[tags](scope):matcher:FIND` list entries (a scope is an entry, a folder `dir/`, or a glob `**`)
- `<<READ(target)<N,M>:matcher:READ` read lines (numbered `N:`); a glob reads every match
- `<<EDIT[tags](target)<L>:content:EDIT` write: no marker replaces, `<N>` / `<N,M>` replace lines,
  `<0>` prepends, `<-1>` appends, `<N.5>` inserts after line N, `<1,-1>` with an empty body clears
- `<<COPY(source)<L>:destination:COPY` and `<<MOVE(source):destination:MOVE`
- `<<KILL(target)::KILL` delete an entry
- `<<OPEN(log:///L/T/S)::OPEN` / `<<FOLD(log:///L/T/S)::FOLD` show or collapse rows of your log

Matchers: plain text finds lines containing it; `#regex#flags`; `$.json.path`.

Terminal codes: `SEND[102]` continue (you see the results of this turn's operations next turn),
`SEND[200]` done (the body is your answer), `SEND[499]` give up.
";

/// The requirements footer.
pub const REQUIREMENTS: &str = "\
Use only the statement grammar. Start with <<PLAN:...:PLAN. End every response with one
<<SEND[code]:...:SEND. Use SEND[102] to see the results of your operations; SEND[200] only
when the task is done, with the answer as its body.
Example turn: <<PLAN:save the fact:PLAN <<EDIT(known:///facts.md):the sky is blue:EDIT <<SEND[102]:saved:SEND
Example last turn, once the task is done: <<PLAN:done:PLAN <<SEND[200]:the fact is saved:SEND
";
