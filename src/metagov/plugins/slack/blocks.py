"""Block Kit messages for the Slack votes: what voters see, before and after closing."""

from __future__ import annotations

from typing import Any

from metagov.plugins.slack.schemas import AdvancedVoteParams, EmojiVoteParams, OptionVotes

EMOJI = {
    "numbers": [
        ":one:", ":two:", ":three:", ":four:", ":five:",
        ":six:", ":seven:", ":eight:", ":nine:", ":keycap_ten:",
    ],
    "hearts": [
        ":heart:", ":orange_heart:", ":yellow_heart:", ":green_heart:", ":blue_heart:",
        ":purple_heart:", ":black_heart:", ":white_heart:", ":brown_heart:", ":sparkling_heart:",
    ],
    "flowers": [
        ":tulip:", ":sunflower:", ":rose:", ":blossom:", ":hibiscus:",
        ":cherry_blossom:", ":bouquet:", ":wilted_flower:", ":herb:", ":four_leaf_clover:",
    ],
}  # fmt: skip
BOOLEAN_EMOJI = [":+1:", ":-1:"]
VOTE_BLOCK = "metagov_vote"


def _text(kind: str, text: str) -> dict[str, Any]:
    return {"type": kind, "text": text, **({"emoji": True} if kind == "plain_text" else {})}


def _header(title: str, details: str | None) -> dict[str, Any]:
    body = f"*{title}*" + (f"\n{details}" if details else "")
    return {"type": "section", "text": _text("mrkdwn", body)}


def emoji_for(params: EmojiVoteParams) -> list[str]:
    return BOOLEAN_EMOJI if params.poll_type == "boolean" else EMOJI[params.emoji_family]


def emoji_vote(
    params: EmojiVoteParams, votes: dict[str, OptionVotes], *, closed: bool = False
) -> list[dict[str, Any]]:
    labels = [
        f"{emoji} {option} ({votes[option].count if option in votes else 0})"
        for emoji, option in zip(emoji_for(params), params.choices(), strict=False)
    ]
    blocks = [_header(params.title, params.details)]
    if closed:
        blocks.append({"type": "section", "text": _text("mrkdwn", "\n".join(labels))})
        blocks.append({"type": "context", "elements": [_text("mrkdwn", "Voting has closed.")]})
        return blocks
    blocks.append(
        {
            "type": "actions",
            "block_id": VOTE_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": f"vote:{index}",
                    "value": str(index),
                    "text": _text("plain_text", label),
                }
                for index, label in enumerate(labels)
            ],
        }
    )
    return blocks


def advanced_vote(
    params: AdvancedVoteParams, voters: int, *, closed: bool = False
) -> list[dict[str, Any]]:
    blocks = [_header(params.title, params.details)]
    for index, candidate in enumerate(params.candidates):
        section: dict[str, Any] = {
            "type": "section",
            "block_id": f"candidate:{index}",
            "text": _text("mrkdwn", candidate),
        }
        if not closed:
            section["accessory"] = {
                "type": "static_select",
                "action_id": f"candidate:{index}",
                "placeholder": _text("plain_text", "Choose"),
                "options": [
                    {"text": _text("plain_text", option), "value": str(j)}
                    for j, option in enumerate(params.options)
                ],
            }
        blocks.append(section)
    note = "Voting has closed." if closed else "Pick an option for each candidate."
    blocks.append(
        {"type": "context", "elements": [_text("mrkdwn", f"{note} {voters} voted so far.")]}
    )
    return blocks
