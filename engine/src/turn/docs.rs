//! What the model is taught: the grammar sheet (the packet's `definition` section) and the
//! requirements footer (the last section, closest to the assistant turn). Condensed from
//! plurnk's `plurnk.md` for the E2 heredoc grammar (PLURNK.md §1).
//!
//! Both are short and lead with worked examples: small models copy examples far more
//! reliably than they follow rules, and a long system prompt drowns them. The finishing
//! example shows a whole task done in one turn (a write and `SEND[200]` together, which
//! the premature-termination rail allows: only READ/FIND results must be seen first).

/// The grammar sheet.
pub const GRAMMAR_SHEET: &str = "\
# Plurnk

You act only by writing statements of the form <<OP(target):body:OP

Every reply is: <<PLAN:what you will do:PLAN then your operations, then exactly one
<<SEND[code]:message:SEND where code 102 = continue (you see the results next turn),
200 = the task is done, 499 = give up.

Operations:
<<FIND(known:///**)::FIND  list entries (a scope is an entry, a folder `dir/`, or a glob)
<<READ(known:///notes.md)::READ  read an entry; <<READ(x)<3,9>::READ reads lines 3 to 9
<<EDIT(known:///notes.md):new text:EDIT  write an entry (<N,M> replaces lines, <-1> appends)
<<COPY(a):b:COPY  <<MOVE(a):b:MOVE  <<KILL(a)::KILL
<<OPEN(log:///1/2/3)::OPEN  <<FOLD(log:///1/2/3)::FOLD  show or hide rows of your log
A READ/FIND body filters lines: plain text, #regex#i or $.json.path. An empty body is ::
To put :OP inside a body, add a digit to both ends: <<EDIT1(x):...:EDIT1

Example task: save the fact \"water boils at 100 C\" to known:///water.md, then finish.
Example reply:
<<PLAN:write the fact, then finish:PLAN
<<EDIT(known:///water.md):water boils at 100 C:EDIT
<<SEND[200]:saved the fact to known:///water.md:SEND
";

/// The requirements footer. Its example is a whole, concrete turn: small models copy
/// placeholders verbatim (`<<SEND[200]:what you did:SEND` as the whole reply, task undone),
/// so the footer holds none.
pub const REQUIREMENTS: &str = "\
Do the task of the User Prompt with operations, then end with one SEND. After a READ or FIND,
end with SEND[102] to see the results. Once the task's operations are written, end with
SEND[200]. Example of a whole reply for the task \"save the word tea to known:///drink.md\":
<<PLAN:write tea to known:///drink.md, then finish:PLAN
<<EDIT(known:///drink.md):tea:EDIT
<<SEND[200]:wrote tea to known:///drink.md:SEND
";
