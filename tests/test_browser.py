"""The dashboard in a real browser (Debian's chromium through selenium) against the
real daemon with farmers registered by the project's client. Screenshots go to
browser-screenshots/ in the test's working directory (_trial_temp/ under trial)."""

import os
import shutil
import tempfile
import time

from twisted.internet import defer, threads
from twisted.trial import unittest

from dataserv.client.farmer import FarmerClient
from dataserv.identity.addresses import address_to_nodeid
from dataserv.identity.signing import FarmerKey
from tests.test_daemon import TIB, Daemon, eventually, http_client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Flags for a root container: no sandbox, no GPU, no /dev/shm, nothing in the background.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars")


def browser_missing():
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-test.txt)"
    if not (CHROMIUM and CHROMEDRIVER):
        return ("no chromium/chromedriver on PATH (Debian: apt-get install chromium "
                "chromium-driver; .ci/run does this)")
    return None


class Browser:
    """One headless chromium with a fresh profile; every call blocks (run in a thread)."""

    def __init__(self, testcase, width, height=900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        profile = tempfile.mkdtemp(prefix="dataserv-chromium-")
        testcase.addCleanup(shutil.rmtree, profile, True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=" + profile)
        options.add_argument("--window-size=%d,%d" % (width, height))
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)
        if width < 500:  # headless chromium's smallest window: emulate a phone's viewport
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
        testcase.addCleanup(self.driver.quit)

    def wait(self, condition, timeout=20, what="a condition"):
        """Poll ``condition(driver)`` until it is true; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition(self.driver)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("%s did not happen within %ss" % (what, timeout))
            time.sleep(0.1)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def console_errors(self):
        """Messages the page logged at level SEVERE (errors, failed loads)."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE"]

    def screenshot(self, name):
        folder = os.path.abspath("browser-screenshots")  # trial runs in _trial_temp/
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name + ".png")
        self.driver.save_screenshot(path)
        return path

    def sideways_overflow(self):
        """How many pixels the page is wider than the window (0 when it fits)."""
        return self.js("return document.documentElement.scrollWidth - window.innerWidth;")


class DashboardBrowserTests(unittest.TestCase):
    """The page loads cleanly, charts the history, finds farmers, fits a phone."""

    timeout = 180

    def setUp(self):
        missing = browser_missing()
        if missing:
            raise unittest.SkipTest(missing)

    @defer.inlineCallbacks
    def started(self):
        http = http_client()
        daemon = Daemon(self).start("--history-interval", "1", "--max-ping", "0")
        yield daemon.wait_healthy(http)
        keys = [FarmerKey.from_seed(b"browser %d" % n) for n in range(3)]
        for height, key in enumerate(keys, 1):
            farmer = FarmerClient(daemon.url, key, http=http)
            self.assertEqual((yield farmer.register()).status, 200)
            self.assertEqual((yield farmer.height(height * 10)).status, 200)

        @defer.inlineCallbacks
        def history_has_points():
            reply = yield FarmerClient(daemon.url, keys[0], http=http).history()
            points = reply.json()["history"]
            return len(points) >= 2 and points[-1]["total_farmers"] == 3
        yield eventually(history_has_points, 20, "two history points with 3 farmers")
        return daemon, keys

    @defer.inlineCallbacks
    def test_phone_widths(self):
        daemon, keys = yield self.started()
        yield threads.deferToThread(self.phone, daemon, keys)
        yield daemon.terminate()

    def phone(self, daemon, keys):
        for width in (360, 375):
            browser = Browser(self, width)
            driver = browser.driver
            driver.get(daemon.url + "/")
            self.assertEqual(browser.js("return window.innerWidth;"), width)
            browser.wait(lambda d: d.find_element("id", "updated").text.startswith("updated"),
                         what="the first refresh")
            self.assertEqual(driver.find_element("id", "farmers").text, "3")
            self.assertEqual(driver.find_element("id", "claimed").text, "60 TB")
            points = browser.wait(lambda d: browser.js(
                "const c = Chart.getChart('chart');"
                "return c ? c.data.datasets[0].data.length : 0;"), what="chart points")
            self.assertGreaterEqual(points, 2)
            self.assertEqual(browser.js(
                "return Chart.getChart('chart').data.datasets[0].data.at(-1).y;"), 3)
            self.assertEqual(browser.sideways_overflow(), 0)

            # Look a farmer up by its address.
            box = driver.find_element("id", "farmer-id")
            box.send_keys(keys[2].address)
            driver.find_element("css selector", "#lookup button[type=submit]").click()
            browser.wait(lambda d: d.find_element("id", "farmer").is_displayed(),
                         what="the farmer's details")
            self.assertEqual(driver.find_element("id", "farmer-state").text, "online")
            details = driver.find_element("id", "farmer-details").text
            self.assertIn("height (credited)\n30", details)
            self.assertIn(address_to_nodeid(keys[2].address), details)
            self.assertEqual(browser.sideways_overflow(), 0)
            browser.screenshot("dashboard-%dpx" % width)
            browser.js("document.getElementById('farmer').scrollIntoView();")
            browser.screenshot("dashboard-%dpx-lookup" % width)
            self.assertEqual(browser.console_errors(), [])

    @defer.inlineCallbacks
    def test_desktop_and_nodeid_lookup(self):
        daemon, keys = yield self.started()
        yield threads.deferToThread(self.desktop, daemon, keys)
        yield daemon.terminate()

    def desktop(self, daemon, keys):
        browser = Browser(self, 1280, 1000)
        driver = browser.driver
        nodeid = address_to_nodeid(keys[0].address)
        driver.get(daemon.url + "/?farmer=" + nodeid)
        browser.wait(lambda d: d.find_element("id", "farmer").is_displayed(),
                     what="the linked farmer's details")
        self.assertEqual(driver.find_element("id", "farmer-name").text, keys[0].address)
        rows = browser.wait(lambda d: d.find_elements("css selector", "#top tr"),
                            what="the top farmers")
        self.assertEqual([r.find_elements("tag name", "td")[1].text for r in rows],
                         ["30", "20", "10"])
        # An id that is neither an address nor a nodeid is refused by the page itself.
        box = driver.find_element("id", "farmer-id")
        box.clear()
        box.send_keys("not-a-farmer")
        driver.find_element("css selector", "#lookup button[type=submit]").click()
        browser.wait(lambda d: d.find_element("id", "lookup-error").text, what="an error")
        self.assertFalse(driver.find_element("id", "farmer").is_displayed())
        browser.screenshot("dashboard-1280px")
        self.assertEqual(browser.console_errors(), [])

        # Advice, from fields some servers add (claimed_height, plots) and a clock
        # that is off: the page's own functions with a farmer that has every problem.
        browser.js("state.skew = 45; showFarmer(arguments[0]);", {
            "btc_addr": keys[1].address, "payout_addr": keys[1].address, "height": 5,
            "claimed_height": 500, "last_seen": 7200, "online": False, "uptime": 40.0,
            "nodeid": address_to_nodeid(keys[1].address), "reg_time": 1700000000,
            "plots": [{"plot_id": "p1", "k": 32, "score": 0.2},
                      {"plot_id": "p2", "k": 32, "score": 0.95}]})
        advice = [item.text for item in driver.find_elements("css selector", "#advice li")]
        self.assertEqual(len(advice), 4, advice)
        self.assertIn("45 seconds behind the server's", advice[0])
        self.assertIn("Not seen for 2 hours", advice[1])
        self.assertIn("Claimed height 500 is above the credited 5", advice[2])
        self.assertIn("1 plot answered fewer than half", advice[3])
        details = driver.find_element("id", "farmer-details").text
        self.assertIn("height (claimed)\n500", details)
        self.assertEqual([row.text for row in driver.find_elements(
            "css selector", "#plots tbody tr")], ["p1 k=32 20.0 %", "p2 k=32 95.0 %"])
        browser.js("document.getElementById('farmer').scrollIntoView();")
        browser.screenshot("dashboard-advice-1280px")
