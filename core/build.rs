// `sqlx::migrate!` embeds the migrations at compile time; without this, a new migration file
// is missed until something else makes the crate rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
