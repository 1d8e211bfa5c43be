// Small behaviours for the server-rendered screens. No inline scripts (the CSP forbids them).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Select all" box in a list header ticks every row box of the same name.
  document.querySelectorAll("[data-select-all]").forEach((box) => {
    box.addEventListener("change", () => {
      const name = box.getAttribute("data-select-all");
      box.form.querySelectorAll(`input[name="${name}"]`).forEach((row) => { row.checked = box.checked; });
    });
  });

  // A select that submits its form when changed (e.g. the board's field picker).
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });

  // Forms that ask before doing something irreversible.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  document.querySelectorAll(".board[data-can-move]").forEach(setUpBoard);
  document.querySelectorAll("input[data-link-search]").forEach(setUpLinkSearch);
});

// A link field with more targets than a select can hold: as the user types, ask the JSON
// API for matching records and offer them as "Title (#id)" suggestions.
function setUpLinkSearch(input) {
  const list = document.getElementById(input.getAttribute("list"));
  const titleField = input.dataset.titleField;
  let timer = null;
  let asked = "";
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const text = input.value.trim();
    if (!text || /\(#\d+\)$/.test(text) || text === asked) return;
    timer = setTimeout(async () => {
      asked = text;
      const url = `${input.dataset.linkSearch}?q=${encodeURIComponent(text)}&per_page=20` +
                  `&fields=${encodeURIComponent(titleField)}${input.dataset.linkFilter || ""}`;
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok || input.value.trim() !== text) return;
      const page = await response.json();
      list.replaceChildren(...page.items.map((item) => {
        const option = document.createElement("option");
        option.value = `${item[titleField] ?? ""} (#${item.id})`.trim();
        return option;
      }));
    }, 200);
  });
}

function setUpBoard(board) {
  let dragged = null;

  board.querySelectorAll(".kanban-card").forEach((card) => {
    card.addEventListener("dragstart", (event) => {
      dragged = card;
      card.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", card.dataset.id);
    });
    card.addEventListener("dragend", () => { card.classList.remove("dragging"); });
  });

  // The per-card "move to" select (phones and keyboards): moves at once, like a drop.
  board.querySelectorAll(".card-move").forEach((form) => {
    const select = form.querySelector("select");
    form.querySelector("button").hidden = true;
    select.addEventListener("change", () => {
      const card = form.closest(".kanban-card");
      const column = board.querySelector(`.column[data-value="${CSS.escape(select.value)}"]`);
      if (column) moveCard(board, card, column);
    });
  });

  board.querySelectorAll(".column").forEach((column) => {
    column.addEventListener("dragover", (event) => {
      event.preventDefault();
      column.classList.add("over");
    });
    column.addEventListener("dragleave", () => column.classList.remove("over"));
    column.addEventListener("drop", (event) => {
      event.preventDefault();
      column.classList.remove("over");
      if (dragged) moveCard(board, dragged, column);
      dragged = null;
    });
  });
}

function adjustCount(column, delta) {
  const count = column.querySelector("h2 .count");
  if (count) count.textContent = String(Number(count.textContent) + delta);
}

// A refused move is explained on the card itself — where the user is looking, however far the
// page is scrolled: the reason, and each missing item with how to satisfy it.
function showRefusal(card, answer) {
  clearRefusal(card);
  const box = document.createElement("div");
  box.className = "card-refusal";
  box.setAttribute("role", "alert");
  const head = document.createElement("p");
  head.textContent = answer.message || "";
  box.append(head);
  if (Array.isArray(answer.missing) && answer.missing.length) {
    const list = document.createElement("ul");
    answer.missing.forEach((item) => {
      const line = document.createElement("li");
      const what = document.createElement("strong");
      what.textContent = item.what;
      line.append(what);
      if (item.how) line.append(` — ${item.how}`);
      list.append(line);
    });
    box.append(list);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "link close";
  close.textContent = "×";
  close.setAttribute("aria-label", card.closest(".board")?.dataset.dismiss || "×");
  close.addEventListener("click", () => clearRefusal(card));
  box.prepend(close);
  card.append(box);
  box.scrollIntoView({block: "nearest", inline: "nearest"});
}

function clearRefusal(card) {
  card.querySelectorAll(".card-refusal").forEach((box) => box.remove());
}

async function moveCard(board, card, column) {
  const from = card.closest(".column");
  if (from === column) return;
  clearRefusal(card);
  const next = card.nextElementSibling;
  column.querySelector(".cards").prepend(card);
  adjustCount(from, -1);
  adjustCount(column, 1);
  card.classList.add("saving");
  const select = card.querySelector(".card-move select");
  if (select) select.value = column.dataset.value;
  const putBack = (answer) => {
    from.querySelector(".cards").insertBefore(card, next);
    if (select) select.value = from.dataset.value;
    adjustCount(from, 1);
    adjustCount(column, -1);
    showRefusal(card, answer);
  };
  try {
    const response = await fetch(board.dataset.moveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": board.dataset.csrf},
      body: JSON.stringify({id: card.dataset.id, field: board.dataset.field, to: column.dataset.value,
                            version: card.dataset.version}),
    });
    const answer = await response.json().catch(() => ({ok: false, message: response.statusText}));
    if (response.ok && answer.ok) {
      card.dataset.version = String(answer.version);
      const version = card.querySelector('.card-move input[name="version"]');
      if (version) version.value = String(answer.version);
    } else {
      putBack({message: answer.message || response.statusText, missing: answer.missing});
    }
  } catch (error) {
    putBack({message: String(error)});
  } finally {
    card.classList.remove("saving");
  }
}

// A link declared `filter_by: G` (e.g. the contact follows the account): when the form's G
// changes, offer only G's records the user may read, asked of the JSON API. The server already
// narrowed the choices to the G the page was drawn with, and refuses a pick outside G.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-filter-by]").forEach((follower) => {
    const parent = follower.form && follower.form.querySelector(`#f-${follower.dataset.filterBy}`);
    if (!parent) return;
    const chosen = () => {
      const text = (parent.value || "").trim();
      const picked = text.match(/\(#(\d+)\)$/) || text.match(/^#?(\d+)$/);
      return picked ? picked[1] : "";
    };
    if (follower.tagName === "INPUT") {  // a search box: its suggestions carry the filter
      parent.addEventListener("change", () => {
        const id = chosen();
        follower.dataset.linkFilter = id ? `&${follower.dataset.filterBy}=${id}` : "";
      });
      return;
    }
    parent.addEventListener("change", async () => {
      const id = chosen();
      const filter = id ? `&${encodeURIComponent(follower.dataset.filterBy)}=${id}` : "";
      const fields = `&fields=${encodeURIComponent(follower.dataset.titleField)}`;
      const response = await fetch(`${follower.dataset.optionsUrl}?per_page=200${fields}${filter}`,
                                   { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok || chosen() !== id) return;
      const page = await response.json();
      const keep = follower.value;
      const empty = document.createElement("option");
      empty.value = "";
      empty.textContent = "—";
      follower.replaceChildren(empty, ...page.items.map((item) => {
        const option = document.createElement("option");
        option.value = String(item.id);
        option.textContent = `${item[follower.dataset.titleField] ?? ""}`.trim() || `#${item.id}`;
        return option;
      }));
      follower.value = page.items.some((item) => String(item.id) === keep) ? keep : "";
      follower.dispatchEvent(new Event("change"));
    });
  });
});
