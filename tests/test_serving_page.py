"""The demo page in real headless Chromium (Debian `chromium` + `chromium-driver`, installed by `make setup`):
recommendations for a user, like two products, reload: the likes are pushed and the list is re-ranked."""

import shutil

import httpx
import pandas as pd
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.processes import serve_process

TOKEN = "page-token"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("chromium and chromedriver are needed: `make setup` installs them (or: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-proxy-server"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.timeout(600)
def test_like_and_reload_reranks_in_the_browser(served_home, browser):
    reviews = pd.concat([pd.read_parquet(p) for p in sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
    user = reviews["user_id"].value_counts().index[5]
    with serve_process(served_home.path, env={"RECSYS_API_TOKEN": TOKEN}) as url:
        wait = WebDriverWait(browser, 30)
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and 'id="user-id"' in page.text, (page.status_code, page.text[:300])
        browser.get(url + "/")
        try:
            wait.until(ec.presence_of_element_located((By.ID, "user-id"))).send_keys(user)
        except TimeoutException:
            pytest.fail(f"the page at {browser.current_url} has no user box: {browser.page_source[:500]}")
        count = browser.find_element(By.ID, "count")
        count.clear()
        count.send_keys("8")
        browser.find_element(By.ID, "get-recs").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cards .card")) == 8)
        cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
        first = [c.get_attribute("data-item-id") for c in cards]
        assert all(c.find_element(By.CSS_SELECTOR, "h3").text for c in cards)  # titles shown
        assert all(c.find_element(By.CSS_SELECTOR, ".score").text for c in cards)
        assert "User ID:" in browser.find_element(By.ID, "user-info").text

        # Like the first two, give the token, reload: both become the user's newest items and leave the list.
        for card in cards[:2]:
            card.find_element(By.CSS_SELECTOR, ".like").click()
        assert "Liked" in cards[0].find_element(By.CSS_SELECTOR, ".like").text
        browser.find_element(By.CSS_SELECTOR, "#config summary").click()
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "reload").click()
        try:  # two POSTs (fsync'd, pushed) and a rerank: slower than a read on a busy machine
            WebDriverWait(browser, 90).until(ec.text_to_be_present_in_element((By.ID, "status"), "Sent 2 like(s)"))
        except TimeoutException:
            pytest.fail(f"the likes were not sent; the page says: {browser.find_element(By.ID, 'status').text!r}")
        after = [c.get_attribute("data-item-id") for c in browser.find_elements(By.CSS_SELECTOR, "#cards .card")]
        assert len(after) == 8 and not set(first[:2]) & set(after)
        recent = browser.find_element(By.ID, "recent").text
        assert first[0] in recent and first[1] in recent

        features = httpx.get(f"{url}/features/user", params={"user_id": user}, timeout=30).json()
        assert features["source"] == "fresh"
        assert set(features["features"]["user_rating_list_10_recent_asin"][-2:]) == set(first[:2])
