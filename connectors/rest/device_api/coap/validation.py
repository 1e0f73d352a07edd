"""Request rules of RFC 7252 and RFC 7959 that aiocoap's server leaves to the application.

aiocoap hands a request over whatever options it carries and whatever its Block1 option says;
without these checks a request with an option the gateway does not understand was served as if
the option were absent (RFC 7252 §5.4.1 requires 4.02 for a critical one: it may change the
request's meaning), and a Block1 block shorter than its announced size was accepted, breaking the
transfer later with an internal error.
"""
from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber

from connectors.rest.device_api.coap.messages import diagnostic

#: critical options the device API honours (every elective one may be ignored, RFC 7252 §5.4.1)
UNDERSTOOD_CRITICAL = frozenset({OptionNumber.URI_HOST, OptionNumber.URI_PORT, OptionNumber.URI_PATH,
                                 OptionNumber.URI_QUERY, OptionNumber.ACCEPT, OptionNumber.BLOCK1,
                                 OptionNumber.BLOCK2})
PROXY_OPTIONS = frozenset({OptionNumber.PROXY_URI, OptionNumber.PROXY_SCHEME})
#: Block1's SZX 7 is BERT, defined for CoAP over TCP only (RFC 8323 §6)
BERT_EXPONENT = 7


def unsupported_options(request: Message) -> Message | None:
    """5.05 for a proxy request, 4.02 naming the first critical option not understood, else None."""
    numbers = {option.number for option in request.opt.option_list()}
    if numbers & PROXY_OPTIONS:
        return diagnostic(Code.PROXYING_NOT_SUPPORTED, "the gateway is not a CoAP proxy")
    for number in sorted(numbers):
        if number.is_critical() and number not in UNDERSTOOD_CRITICAL:
            return diagnostic(Code.BAD_OPTION, f"critical option {int(number)} is not supported")
    return None


def block1_misuse(request: Message) -> Message | None:
    """4.00 for a Block1 option that cannot start or continue an upload over UDP, else None."""
    block1 = request.opt.block1
    if block1 is None:
        return None
    if block1.size_exponent == BERT_EXPONENT:
        return diagnostic(Code.BAD_REQUEST, "Block1 SZX 7 (BERT) is for CoAP over TCP; use 0-6")
    if block1.more and len(request.payload) != block1.size:
        return diagnostic(Code.BAD_REQUEST, f"Block1 block {block1.block_number} carries "
                          f"{len(request.payload)} bytes; its size is {block1.size} (only the last may be shorter)")
    return None
