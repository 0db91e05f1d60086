// Copy buttons: a button with data-copy="<input id>" copies that input's value.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const id = button.getAttribute("data-copy");
  const field = document.getElementById(id);
  const status = document.querySelector(`[data-copy-status="${id}"]`);
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied to the clipboard.";
  } catch (error) {
    // Without clipboard access (an insecure origin, a denied permission), select
    // the text so the user can copy it with the keyboard.
    field.focus();
    field.select();
    if (status) status.textContent = "Select and copy the text by hand: the clipboard is not available.";
  }
});
