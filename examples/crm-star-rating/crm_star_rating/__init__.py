"""A star-rating widget for integer fields, registered through the blueprint_crm pluggy hook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from engine.metamodel import FieldType
from engine.plugins import hookimpl
from engine.runtime.web.widgets import NOT_SUBMITTED, FieldContext, InputError

STARS = 5


class StarRating:
    """Five stars; each is worth max/5 points when the field declares a max, else one point."""

    name = "star_rating"
    field_types = (FieldType.INTEGER,)

    @staticmethod
    def _step(field: FieldContext) -> int:
        maximum = field.spec.maximum
        return max(1, int(maximum) // STARS) if maximum is not None else 1

    def _stars(self, field: FieldContext, value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            return 0
        return max(0, min(STARS, round(number / self._step(field))))

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        stars = self._stars(field, value)  # a stored value, or the points parse() returned for a post
        options = Markup("").join(
            Markup('<label class="star"><input type="radio" name="{0}" value="{1}"{2}> {3}</label>').format(
                field.name, count, Markup(" checked") if count == stars else Markup(""),
                "☆" if count == 0 else "★" * count)
            for count in range(STARS + 1))
        title = "评分" if lang == "zh" else "Rating"
        return Markup('<span class="group stars" id="f-{}" role="radiogroup" aria-label="{}">{}</span>').format(
            field.name, title, options)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value is None:
            return Markup("")
        stars = self._stars(field, value)
        return Markup('<span class="stars" title="{}">{}{}</span>').format(
            value, "★" * stars, "☆" * (STARS - stars))

    def parse(self, field: FieldContext, form_values: Mapping[str, Sequence[Any]]) -> Any:
        values = form_values.get(field.name)
        if not values:
            return NOT_SUBMITTED
        text = str(values[-1]).strip()
        if not text.isdigit() or int(text) > STARS:
            raise InputError(f"{field.name}: choose between 0 and {STARS} stars")
        return int(text) * self._step(field)


@hookimpl
def crm_widgets() -> list[Any]:
    """The star rating widget."""
    return [StarRating()]


__all__ = ["StarRating", "crm_widgets"]
