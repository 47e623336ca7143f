"""Run a test's work in several threads at once and collect what they raise."""
import threading


def errors_in_threads(work, count=4):
    """The exceptions `work()` raised, run in `count` threads at once."""
    errors = []

    def run():
        try:
            work()
        except Exception as e:  # noqa: BLE001 - (returned to the test)
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
