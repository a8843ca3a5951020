// An endpoint's custom headers (docs/api.md §11.1): the rows of the endpoint form, and
// the list in its details.
//
// The API shows credentials' values as "********" and, on an update, takes that same
// string as "keep the stored value". So a hidden value is never put in an input: its row
// starts empty with an "unchanged" placeholder, and an empty hidden row sends the mask
// back, which keeps it. Typing a value replaces it; removing the row removes the header.

import { fill, h } from "./ui.js";

export const MASK = "********";

/** The details' view of the headers: every name, hidden values as the API shows them. */
export function headersList(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h("span", { class: "muted" }, "None");
  return h(
    "ul",
    { class: "header-list" },
    entries.map(([name, value]) =>
      h(
        "li",
        {},
        h("span", { class: "mono header-name" }, name),
        ": ",
        value === MASK
          ? h("span", { class: "mono muted", title: "Stored encrypted; not shown" }, MASK)
          : h("span", { class: "mono break" }, value),
      ),
    ),
  );
}

export class HeadersEditor {
  /**
   * @param {HTMLElement} container  where the rows go
   * @param {HTMLButtonElement} addButton
   * @param {AbortSignal} signal     aborted at sign-out
   */
  constructor(container, addButton, signal) {
    this.container = container;
    addButton.addEventListener("click", () => this.addRow("", "", false).querySelector("input").focus(), {
      signal,
    });
  }

  /** Show an endpoint's headers (as the API answered them) as rows. */
  load(headers) {
    fill(this.container);
    for (const [name, value] of Object.entries(headers || {})) this.addRow(name, value, value === MASK);
  }

  addRow(name, value, masked) {
    const n = this.container.children.length + 1;
    const row = h(
      "div",
      { class: "header-row", role: "group", "aria-label": `Header ${n}`, dataset: { masked: masked ? "1" : null } },
      h("input", {
        class: "mono",
        name: "headerName",
        value: name,
        "aria-label": `Header ${n} name`,
        placeholder: "X-Header-Name",
        autocomplete: "off",
        spellcheck: "false",
      }),
      h("input", {
        class: "mono",
        name: "headerValue",
        value: masked ? "" : value,
        "aria-label": `Header ${n} value`,
        placeholder: masked ? "Unchanged (hidden)" : "value",
        autocomplete: "off",
        spellcheck: "false",
      }),
      h(
        "button",
        {
          type: "button",
          class: "btn btn-quiet icon-btn",
          "aria-label": `Remove header ${n}`,
          onclick: () => {
            const next = row.nextElementSibling || row.previousElementSibling;
            row.remove();
            this.relabel();
            (next ? next.querySelector("input") : this.container.nextElementSibling)?.focus();
          },
        },
        "×",
      ),
    );
    this.container.append(row);
    return row;
  }

  /** Number the rows again after one is removed, so that labels match what is seen. */
  relabel() {
    [...this.container.children].forEach((row, i) => {
      const n = i + 1;
      row.setAttribute("aria-label", `Header ${n}`);
      const [nameInput, valueInput, remove] = row.querySelectorAll("input, button");
      nameInput.setAttribute("aria-label", `Header ${n} name`);
      valueInput.setAttribute("aria-label", `Header ${n} value`);
      remove.setAttribute("aria-label", `Remove header ${n}`);
    });
  }

  /** The headers object to send, or an error a person can act on. */
  collect() {
    const headers = {};
    for (const row of this.container.querySelectorAll(".header-row")) {
      const [nameInput, valueInput] = row.querySelectorAll("input");
      const name = nameInput.value.trim();
      const value = valueInput.value;
      if (!name) {
        if (!value) continue; // an empty row is ignored
        nameInput.focus();
        return { error: "Enter a name for each header, or remove the row." };
      }
      headers[name] = row.dataset.masked && !value ? MASK : value;
    }
    return { headers };
  }
}
