"""Leaving the CPUs that take the GPU's interrupts (scoring.irq_cpus), against a fake /proc."""

import pytest

from scoring.irq_cpus import (MIN_INTERRUPTS, busy_irqs, cpus_text, driver_interrupts, gpu_interrupt_cpus,
                              leave_interrupt_cpus)

# /proc/interrupts as an H100 host shows it after scoring (4 of its 16 CPUs kept, spaces trimmed)
INTERRUPTS = """\
           CPU0       CPU1       CPU2       CPU3
  31:          0          0          0       3693  PCI-MSIX-0000:00:01.0   1-edge      virtio0-req.0
  42:          0          0     155293          0  PCI-MSIX-0000:00:06.0   0-edge      nvidia
  43:          0          0          0          0  PCI-MSIX-0000:00:06.0   1-edge      nvidia
  44:         43          0          0          0  PCI-MSIX-0000:00:06.0   2-edge      nvidia
  50:          7          0          0          0  IO-APIC   9-fasteoi   acpi, nvidia-sibling
 NMI:          0          0          0          0   Non-maskable interrupts
"""


def _proc(tmp_path, interrupts=INTERRUPTS, affinity=None, name="effective_affinity_list"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "interrupts").write_text(interrupts)
    for irq, cpus in (affinity or {}).items():
        d = tmp_path / "irq" / str(irq)
        d.mkdir(parents=True)
        (d / name).write_text(cpus + "\n")
    return tmp_path


def test_the_drivers_interrupts_and_their_counts():
    counts = driver_interrupts(INTERRUPTS)
    assert counts == {42: 155293, 43: 0, 44: 43}  # not 31 (virtio), nor 50 (another handler's name)
    assert busy_irqs(counts) == [42]  # 44 fired, but a sliver of the driver's load
    assert busy_irqs({42: MIN_INTERRUPTS - 1}) == []  # a GPU that has hardly run yet says nothing
    assert driver_interrupts("") == {}


def test_a_shared_interrupt_line_counts_for_the_driver():
    text = "      CPU0  CPU1\n 16:  500  700  IO-APIC 16-fasteoi  ehci_hcd:usb1, nvidia\n"
    assert driver_interrupts(text) == {16: 1200}


def test_the_cpus_that_take_them(tmp_path):
    proc = _proc(tmp_path, affinity={42: "2", 44: "0"})
    assert gpu_interrupt_cpus({0, 1, 2, 3}, proc) == {2}
    assert gpu_interrupt_cpus({0, 1, 3}, proc) == set()  # not among the process's CPUs


def test_where_it_may_go_when_the_kernel_does_not_say_where_it_goes(tmp_path):
    proc = _proc(tmp_path, affinity={42: "2"}, name="smp_affinity_list")
    assert gpu_interrupt_cpus({0, 1, 2, 3}, proc) == {2}
    anywhere = _proc(tmp_path / "any", affinity={42: "0-3"}, name="smp_affinity_list")
    assert gpu_interrupt_cpus({0, 1, 2, 3}, anywhere) == set()  # every CPU: none to leave


def test_nothing_to_read_leaves_nothing(tmp_path):
    assert gpu_interrupt_cpus({0, 1, 2, 3}, tmp_path) == set()  # no /proc/interrupts
    assert gpu_interrupt_cpus({0, 1, 2, 3}, _proc(tmp_path)) == set()  # no /proc/irq/N


def test_the_process_leaves_them(tmp_path):
    proc = _proc(tmp_path, affinity={42: "14"})
    pinned = []
    left = leave_interrupt_cpus(proc, pin=pinned.append, allowed=set(range(16)))
    assert left == [14]
    assert pinned == [[c for c in range(16) if c != 14]]


@pytest.mark.parametrize("allowed", [{11, 12, 13, 14}, {13, 14}])
def test_it_keeps_enough_cpus(tmp_path, allowed):
    # leaving CPU 14 would leave fewer than MIN_LEFT (4) CPUs
    proc = _proc(tmp_path, affinity={42: "14"})
    pinned = []
    assert leave_interrupt_cpus(proc, pin=pinned.append, allowed=allowed) == []
    assert pinned == []


def test_no_more_than_a_quarter(tmp_path):
    proc = _proc(tmp_path, "     CPU0 CPU1 CPU2 CPU3 CPU4 CPU5 CPU6 CPU7\n"
                           " 42: 0 0 0 0 0 0 900 0  PCI-MSIX 0-edge nvidia\n"
                           " 43: 0 0 0 0 0 0 0 900  PCI-MSIX 1-edge nvidia\n"
                           " 44: 0 0 0 0 0 900 0 0  PCI-MSIX 2-edge nvidia\n",
                 affinity={42: "6", 43: "7", 44: "5"})
    pinned = []
    assert leave_interrupt_cpus(proc, pin=pinned.append, allowed=set(range(8))) == []  # 3 of 8
    assert leave_interrupt_cpus(proc, pin=pinned.append, allowed=set(range(12))) == [5, 6, 7]
    assert pinned == [[0, 1, 2, 3, 4, 8, 9, 10, 11]]


def test_a_failed_pin_changes_nothing(tmp_path):
    def refuse(cpus):
        raise OSError("not permitted")

    proc = _proc(tmp_path, affinity={42: "14"})
    assert leave_interrupt_cpus(proc, pin=refuse, allowed=set(range(16))) == []


def test_an_unreadable_affinity_is_skipped(tmp_path):
    proc = _proc(tmp_path, affinity={42: "fourteen"})
    assert gpu_interrupt_cpus(set(range(16)), proc) == set()
    (proc / "irq" / "42" / "smp_affinity_list").write_text("14\n")
    assert gpu_interrupt_cpus(set(range(16)), proc) == {14}
    (proc / "irq" / "42" / "effective_affinity_list").write_text("\n")  # empty: says nothing
    assert gpu_interrupt_cpus(set(range(16)), proc) == {14}


def test_a_proc_that_cannot_be_read_leaves_nothing(tmp_path):
    (tmp_path / "interrupts").write_bytes(b"\xff\xfe not text")
    pinned = []
    assert leave_interrupt_cpus(tmp_path, pin=pinned.append, allowed=set(range(16))) == []
    assert pinned == []


def test_cpus_in_words():
    assert cpus_text([14]) == "CPU 14"
    assert cpus_text({6, 5}) == "CPUs 5, 6"
