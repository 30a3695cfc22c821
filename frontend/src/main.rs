//! Entry point of the web client: mount the app.

fn main() {
    leptos::mount::mount_to_body(|| leptos::view! { <frontend::App/> });
}
