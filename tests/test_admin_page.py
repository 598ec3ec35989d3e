"""The admin page in a real headless Chromium: token once, paste material, Save, see the outcome."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.edge import MISMATCHED_KEY, new_upload, running_admin

pytestmark = pytest.mark.browser


async def test_page_uploads_material_and_shows_every_outcome(page: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect

    script_errors: list[str] = []  # Chromium also logs each 401/422 answer; those are expected
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("console", lambda m: script_errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None)
    async with running_admin(tmp_path / "edge") as admin:
        serving = await admin.certificate()
        await page.goto(admin.url("/"))
        await page.screenshot(path=str(tmp_path / "admin-page-token.png"))

        # Asked for the token once; a wrong one is refused in the page, the right one is kept.
        await page.get_by_label("Token").fill("not-the-token")
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("alert")).to_contain_text("The token was not accepted")
        await page.get_by_label("Token").fill(admin.token)
        await page.get_by_role("button", name="Continue").click()
        await expect(page.locator("#fingerprint")).to_have_text(serving["fingerprint_sha256"])
        await expect(page.locator("#source")).to_contain_text("Self-signed")
        await expect(page.locator("#days-left")).to_contain_text("days left")
        banner = page.locator("#expiry-banner")
        await expect(banner).to_contain_text(f"Serving the self-signed default certificate {serving['subject']}")
        await expect(banner).to_contain_text(serving["fingerprint_sha256"])
        assert await page.evaluate("sessionStorage.getItem('edge-proxy.admin-token')") == admin.token
        assert await page.evaluate("localStorage.length") == 0

        # Valid material: saved, and the new fingerprint is shown as the serving one.
        upload = new_upload()
        body = upload.body()
        await page.get_by_label("Certificate", exact=True).fill(body["certificate"])
        await page.get_by_label("Key", exact=True).fill(body["key"])
        await page.get_by_label("Certificate authority").fill(body["ca"])
        await page.get_by_role("button", name="Save").click()
        result = page.locator("#upload-result")
        await expect(result).to_contain_text(f"Now serving version {serving['version'] + 1}")
        await expect(result).to_contain_text(upload.fingerprint)
        await expect(page.locator("#fingerprint")).to_have_text(upload.fingerprint)
        await expect(page.locator("#source")).to_contain_text("Uploaded")
        await expect(banner).to_be_hidden()  # 90 days left: nothing to warn about
        await expect(page.get_by_label("Key", exact=True)).to_have_value("")
        assert (await admin.certificate())["fingerprint_sha256"] == upload.fingerprint
        await expect(page.locator("#tls-policy")).to_contain_text("default: TLSv1.2, TLSv1.3; groups X25519, P-256, P-384")
        await page.screenshot(path=str(tmp_path / "admin-page-saved.png"), full_page=True)

        # A mismatched key: every problem shown in the page, the serving certificate unchanged.
        wrong = new_upload().with_wrong_key()
        await page.get_by_label("Certificate", exact=True).fill(wrong["certificate"])
        await page.get_by_label("Key", exact=True).fill(wrong["key"])
        await page.get_by_label("Certificate authority").fill(wrong["ca"])
        await page.get_by_role("button", name="Save").click()
        await expect(result).to_contain_text("Not saved")
        await expect(result.locator("li")).to_have_text([MISMATCHED_KEY])
        await expect(page.locator("#last-error")).to_contain_text(MISMATCHED_KEY)
        await expect(page.locator("#fingerprint")).to_have_text(upload.fingerprint)
        await page.screenshot(path=str(tmp_path / "admin-page-refused.png"), full_page=True)

        # The token survives a reload of the page (same tab), without being asked again.
        await page.reload()
        await expect(page.locator("#fingerprint")).to_have_text(upload.fingerprint)
        await expect(page.locator("#signin")).to_be_hidden()
    assert script_errors == []


@pytest.mark.parametrize(("days", "level"), [(10, "warn"), (3, "bad")])
async def test_a_certificate_close_to_expiry_shows_a_banner_naming_its_date(page: Any, tmp_path: Path, days: int, level: str) -> None:
    """Within 30 days a warning banner, within 7 an error one, worded as the log line."""
    from playwright.async_api import expect

    upload = new_upload(not_after=datetime.now(UTC) + timedelta(days=days, hours=1))
    async with running_admin(tmp_path / "edge") as admin:
        status, _ = await admin.upload(upload.body())
        assert status == 200
        await page.goto(admin.url("/"))
        await page.get_by_label("Token").fill(admin.token)
        await page.get_by_role("button", name="Continue").click()
        banner = page.locator("#expiry-banner")
        subject = upload.leaf.certificate.subject.rfc4514_string()
        expires = f"{upload.leaf.certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        await expect(banner).to_contain_text(f"The serving certificate {subject} ({upload.fingerprint}) expires on {expires}")
        await expect(banner).to_contain_text(f"(in {days} days): renew it.")
        await expect(banner).to_have_class(re.compile(rf"\b{level}\b"))
