"""Every word the operator page shows, in Vietnamese and English, and how numbers are written in
each. The one place labels live: templates ask for a key, never hold text of their own.

The language is the `?lang=` of the request when it names one, else the `loa_lang` cookie, else
Vietnamese (the office's language)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

LANGUAGES: Final = ("vi", "en")
DEFAULT_LANGUAGE: Final = "vi"
LANG_COOKIE: Final = "loa_lang"

# key -> (Vietnamese, English). `{name}` fields are filled by Translator.__call__.
MESSAGES: Final[Mapping[str, tuple[str, str]]] = {
    "app.title": ("Loa — Trang điều hành", "Loa — Operator page"),
    "app.language": ("Ngôn ngữ", "Language"),
    "app.signed_in_as": ("Khóa {name} ({role})", "Key {name} ({role})"),
    "app.as_of": ("Số liệu lúc {time}", "Figures as of {time}"),
    "app.auto_refresh": ("Tự làm mới mỗi phút", "Refresh every minute"),
    "app.logout": ("Đăng xuất", "Sign out"),
    # Sign in and out.
    "login.title": ("Đăng nhập", "Sign in"),
    "login.key": ("Khóa API", "API key"),
    "login.help": (
        "Dán khóa API do quản trị viên cấp (loa apikey create). Khóa chỉ được giữ trong cookie "
        "của trình duyệt này cho đến khi bạn đăng xuất hoặc đóng trình duyệt.",
        "Paste the API key an administrator gave you (loa apikey create). It is kept only in "
        "this browser's cookie until you sign out or close the browser.",
    ),
    "login.submit": ("Đăng nhập", "Sign in"),
    "login.refused": (
        "Khóa không được chấp nhận (không đúng, đã bị thu hồi hoặc đã hết hạn).",
        "The key was refused (unknown, revoked or expired).",
    ),
    "login.empty": ("Hãy dán khóa API vào ô trên.", "Paste an API key into the box above."),
    "login.ended": (
        "Phiên đã kết thúc: khóa không còn hiệu lực. Hãy đăng nhập lại.",
        "Your session ended: the key is no longer valid. Please sign in again.",
    ),
    "login.signed_out": ("Đã đăng xuất.", "Signed out."),
    "login.forged": (
        "Biểu mẫu không hợp lệ hoặc được gửi từ trang khác. Hãy tải lại trang và thử lại.",
        "The form was not valid or was sent from another site. Reload the page and try again.",
    ),
    # Roles.
    "role.admin": ("quản trị", "administrator"),
    "role.planner": ("lập kế hoạch", "planner"),
    "role.approver": ("phê duyệt", "approver"),
    "role.operator": ("vận hành", "operator"),
    "role.district": ("trung tâm khu vực {area}", "centre of area {area}"),
    # Campaigns.
    "campaigns.title": ("Chiến dịch", "Campaigns"),
    "campaigns.none": ("Chưa có chiến dịch nào.", "No campaigns yet."),
    "campaigns.recent": ("{n} chiến dịch gần nhất", "The {n} most recent campaigns"),
    "campaigns.settled": ("{done}/{total} tin đã xử lý", "{done} of {total} messages settled"),
    "campaigns.no_messages": (
        "không có tin nhắn (chỉ phát thanh, hoặc chưa đến giờ gửi)",
        "no messages (broadcast only, or not due yet)",
    ),
    "campaigns.waves": ("Các đợt gửi", "Waves"),
    "campaigns.wave": ("Đợt", "Wave"),
    "campaigns.channel": ("Kênh", "Channel"),
    # Campaign and wave statuses.
    "status.draft": ("nháp", "draft"),
    "status.approved": ("đã duyệt", "approved"),
    "status.scheduled": ("đã lên lịch", "scheduled"),
    "status.running": ("đang chạy", "running"),
    "status.paused": ("tạm dừng", "paused"),
    "status.completed": ("hoàn thành", "completed"),
    "status.cancelled": ("đã hủy", "cancelled"),
    "status.pending": ("chờ phát động", "not launched"),
    "status.expanding": ("đang tạo tin", "writing messages"),
    "status.expanded": ("đang diễn ra", "in progress"),
    "status.done": ("xong", "done"),
    # Message outcomes, as the progress bars group them.
    "outcome.delivered": ("đã đến máy", "delivered"),
    "outcome.sent": ("đã gửi, chưa có báo cáo", "sent, not reported yet"),
    "outcome.failed": ("thất bại", "failed"),
    "outcome.set_aside": (
        "không gửi (bị chặn, quá hạn, đã hủy)",
        "not sent (suppressed, expired, cancelled)",
    ),
    "outcome.unknown": ("chưa rõ kết quả", "outcome unknown"),
    "outcome.pending": ("đang chờ gửi", "waiting"),
    # Statistics tables.
    "districts.title": ("Tỉ lệ đến máy theo huyện", "Delivery rate per district"),
    "districts.title_communes": ("Tỉ lệ đến máy theo xã", "Delivery rate per commune"),
    "districts.none": ("Chưa có tin nào được gửi.", "Nothing has been sent yet."),
    "districts.no_district": ("(không thuộc huyện)", "(no district)"),
    "failures.title": ("Lỗi theo nguyên nhân", "Failures by reason"),
    "failures.none": ("Không có tin nào lỗi.", "No failed messages."),
    "filter.campaign": ("Số liệu của chiến dịch", "Figures of campaign"),
    "filter.all": ("Tất cả", "All"),
    "filter.apply": ("Lọc", "Filter"),
    "col.area": ("Khu vực", "Area"),
    "col.targeted": ("Số tin", "Messages"),
    "col.sent": ("Đã gửi", "Sent"),
    "col.delivered": ("Đến máy", "Delivered"),
    "col.failed": ("Thất bại", "Failed"),
    "col.rate": ("Tỉ lệ đến máy", "Delivery rate"),
    "col.code": ("Mã", "Code"),
    "col.reason": ("Nguyên nhân", "Reason"),
    "col.set_aside": ("Không gửi", "Not sent"),
    # The playlist.
    "playlist.title": ("Danh sách phát hôm nay", "Today's playlist"),
    "playlist.of": ("{area} ({code}), ngày {date}", "{area} ({code}), {date}"),
    "playlist.choose": ("Mã khu vực", "Area code"),
    "playlist.show": ("Xem", "Show"),
    "playlist.pick": (
        "Nhập mã một huyện (hoặc xã) để xem danh sách phát hôm nay.",
        "Enter a district (or commune) code to see its playlist for today.",
    ),
    "playlist.none": ("Hôm nay không có bản tin nào.", "Nothing to play today."),
    "playlist.overflow": ("Không vừa khung giờ", "Does not fit its slot"),
    "playlist.forbidden": (
        "Khóa này không được xem khu vực {code}.",
        "This key may not see area {code}.",
    ),
    "playlist.unknown": ("Không có khu vực mã {code}.", "There is no area with code {code}."),
    "col.time": ("Giờ", "Time"),
    "col.title": ("Bản tin", "Item"),
    "col.priority": ("Mức ưu tiên", "Priority"),
    "col.duration": ("Thời lượng", "Length"),
    "col.repeats": ("Số lần phát", "Plays"),
    "col.communes": ("Xã", "Communes"),
    "priority.normal": ("thông thường", "normal"),
    "priority.priority": ("ưu tiên", "priority"),
    "priority.emergency": ("khẩn cấp", "emergency"),
}

# Why a message failed, by its error code: the SMS provider's (Twilio's, see channels/twilio.py)
# or Loa's own. Codes not listed are shown with the "other" label and their code.
ERROR_LABELS: Final[Mapping[str, tuple[str, str]]] = {
    "30001": ("Hàng đợi của nhà cung cấp bị đầy", "Provider queue overflow"),
    "30002": ("Tài khoản nhà cung cấp bị tạm khóa", "Provider account suspended"),
    "30003": (
        "Không liên lạc được máy nhận (tắt máy, ngoài vùng phủ sóng)",
        "Unreachable handset (switched off or out of coverage)",
    ),
    "30004": ("Tin bị chặn (người nhận chặn hoặc nhà mạng chặn)", "Message blocked"),
    "30005": ("Số máy không tồn tại", "Unknown destination handset"),
    "30006": ("Số cố định hoặc nhà mạng không nhận tin", "Landline or unreachable carrier"),
    "30007": (
        "Nhà mạng lọc nội dung tin (xem lại nội dung)",
        "Filtered by the carrier (review the content)",
    ),
    "30008": ("Lỗi không rõ của nhà mạng", "Unknown carrier error"),
    "21211": ("Số điện thoại không hợp lệ", "Invalid phone number"),
    "21610": ("Người nhận đã từ chối nhận tin (STOP)", "Recipient opted out (STOP)"),
    "21612": ("Số không nhận được tin SMS", "Number cannot receive SMS"),
    "21614": ("Không phải số di động", "Not a mobile number"),
    "20429": ("Gửi quá nhanh, nhà cung cấp từ chối", "Too many requests"),
    "20003": ("Sai thông tin tài khoản nhà cung cấp", "Provider authentication failed"),
    "21606": ("Số gửi không dùng được cho tài khoản", "Sender not valid for the account"),
    # Loa's own reasons.
    "no_consent": (
        "Chưa đồng ý nhận tin quảng cáo (Nghị định 91/2020)",
        "No consent to advertising (Decree 91/2020)",
    ),
    "capped": ("Vượt giới hạn số tin mỗi người", "Over the per-person cap"),
    "left_audience": ("Không còn thuộc đối tượng nhận", "No longer in the audience"),
    "date_changed": ("Ngày nhắc đã thay đổi", "The reminder's date changed"),
    "expired": ("Quá hạn gửi", "Too late to send"),
    "template": ("Lỗi mẫu tin nhắn", "Message template error"),
    "connect": ("Không kết nối được nhà cung cấp", "Could not connect to the provider"),
    "connection": ("Mất kết nối với nhà cung cấp", "Connection to the provider lost"),
    "timeout": ("Nhà cung cấp không trả lời kịp", "The provider did not answer in time"),
    "unreadable": ("Cổng SMS trả lời không đọc được", "Unreadable gateway answer"),
}
_HTTP_CODE = re.compile(r"^http_(\d{3})$")
_OTHER_ERROR: Final = ("Lỗi khác", "Other error")
_HTTP_ERROR: Final = ("Cổng SMS trả lỗi HTTP {status}", "Gateway answered HTTP {status}")
_NO_CODE: Final = ("Không có mã lỗi", "No error code")

# How numbers are written: Vietnamese groups thousands with '.' and writes ',' for the decimal.
_SEPARATORS: Final = {"vi": (".", ","), "en": (",", ".")}
# Day first in Vietnamese; ISO 8601 in English (an international reader's least ambiguous).
_DATE_FORMATS: Final = {"vi": "%d/%m/%Y", "en": "%Y-%m-%d"}


def choose_language(asked: str | None, remembered: str | None) -> str:
    """The language of `?lang=` if it names one, else the cookie's, else Vietnamese. An unknown
    value is ignored: the page is still shown, in the language the person had."""
    for candidate in (asked, remembered):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Translator:
    lang: str

    def _pick(self, pair: tuple[str, str]) -> str:
        return pair[LANGUAGES.index(self.lang)]

    def __call__(self, key: str, **fields: object) -> str:
        text = self._pick(MESSAGES[key])
        return text.format(**fields) if fields else text

    def error_label(self, code: str | None) -> str:
        if code is None:
            return self._pick(_NO_CODE)
        if code in ERROR_LABELS:
            return self._pick(ERROR_LABELS[code])
        http = _HTTP_CODE.match(code)
        if http:
            return self._pick(_HTTP_ERROR).format(status=http[1])
        return self._pick(_OTHER_ERROR)

    def number(self, value: int) -> str:
        thousands, _ = _SEPARATORS[self.lang]
        return f"{value:,}".replace(",", thousands)

    def percent(self, ratio: float | None, digits: int = 1) -> str:
        """A ratio (0..1) as a percentage; an en dash when there is none (nothing sent)."""
        if ratio is None:
            return "–"
        thousands, decimal = _SEPARATORS[self.lang]
        text = f"{ratio * 100:,.{digits}f}".replace(",", "\0").replace(".", decimal)
        return text.replace("\0", thousands) + "%"

    def day(self, day: date) -> str:
        return day.strftime(_DATE_FORMATS[self.lang])

    def moment(self, instant: datetime) -> str:
        return f"{instant:%H:%M} {self.day(instant.date())}"

    @staticmethod
    def duration(milliseconds: int) -> str:
        """m:ss, rounded up to the second, as players show it."""
        seconds = -(-milliseconds // 1000)
        return f"{seconds // 60}:{seconds % 60:02d}"
