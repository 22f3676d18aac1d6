namespace OdaKvmBackup.Core.Tests;

public class VirshArgumentsTests
{
    private const string Snap = "FILE_STAGE_BACKUP.TEMP";

    [Fact]
    public void Domcapabilities_name_the_virt_type_and_only_the_arch_and_machine_given()
    {
        Assert.Equal(["domcapabilities", "--virttype", "qemu", "--arch", "x86_64", "--machine", "pc"], VirshArguments.DomainCapabilities("qemu", "x86_64", "pc"));
        Assert.Equal(["domcapabilities", "--virttype", "kvm"], VirshArguments.DomainCapabilities("kvm", null, null));
    }

    [Fact]
    public void Quiesced_snapshot_has_one_diskspec_per_disk()
    {
        var args = VirshArguments.SnapshotCreate("linux_vm", Snap, quiesce: true,
            [new DiskSpec("vda", "/x/linux_boot.FILE_STAGE_BACKUP.TEMP"), new DiskSpec("vdb", "/y/disco.FILE_STAGE_BACKUP.TEMP")], []);

        Assert.Equal(
        [
            "snapshot-create-as", "--domain", "linux_vm", "--name", Snap, "--disk-only", "--atomic", "--quiesce",
            "--diskspec", "vda,snapshot=external,file=/x/linux_boot.FILE_STAGE_BACKUP.TEMP",
            "--diskspec", "vdb,snapshot=external,file=/y/disco.FILE_STAGE_BACKUP.TEMP",
        ], args);
    }

    [Fact]
    public void Crash_consistent_snapshot_has_no_quiesce()
    {
        var args = VirshArguments.SnapshotCreate("linux_vm", Snap, quiesce: false, [new DiskSpec("vda", "/x/a.FILE_STAGE_BACKUP.TEMP")], []);

        Assert.Equal(
        [
            "snapshot-create-as", "--domain", "linux_vm", "--name", Snap, "--disk-only", "--atomic",
            "--diskspec", "vda,snapshot=external,file=/x/a.FILE_STAGE_BACKUP.TEMP",
        ], args);
    }

    [Fact]
    public void Excluded_disks_get_snapshot_no()
    {
        var args = VirshArguments.SnapshotCreate("d", Snap, quiesce: true, [new DiskSpec("vda", "/x/a.S")], ["vdb", "vdc"]);

        Assert.Equal(["--diskspec", "vda,snapshot=external,file=/x/a.S", "--diskspec", "vdb,snapshot=no", "--diskspec", "vdc,snapshot=no"], args[^6..]);
    }

    [Fact]
    public void Overlay_paths_with_commas_are_doubled_in_diskspec()
    {
        var args = VirshArguments.SnapshotCreate("d", Snap, quiesce: false, [new DiskSpec("vdd", "/srv/vm images/it's \"quoted\", really.S")], []);

        Assert.Equal("vdd,snapshot=external,file=/srv/vm images/it's \"quoted\",, really.S", args[^1]);
    }

    [Fact]
    public void Overlay_paths_with_spaces_stay_one_argument()
    {
        var args = VirshArguments.SnapshotCreate("d", Snap, quiesce: false, [new DiskSpec("vda", "/srv/vm images/disk a.S")], []);

        Assert.Equal(["--diskspec", "vda,snapshot=external,file=/srv/vm images/disk a.S"], args[^2..]);
    }

    [Theory]
    [InlineData("a,b", "a,,b")]
    [InlineData(",,", ",,,,")]
    [InlineData("/plain/path", "/plain/path")]
    public void EscapeDiskSpecValue_doubles_every_comma(string value, string expected)
    {
        Assert.Equal(expected, VirshArguments.EscapeDiskSpecValue(value));
    }

    [Fact]
    public void Snapshot_delete_removes_metadata_only()
    {
        Assert.Equal(["snapshot-delete", "--domain", "linux_vm", "--snapshotname", Snap, "--metadata"],
            VirshArguments.SnapshotDeleteMetadata("linux_vm", Snap));
    }

    [Fact]
    public void Blockcommit_is_active_verbose_pivots_and_names_the_disk_s_own_file_as_base()
    {
        Assert.Equal(["blockcommit", "--domain", "linux_vm", "--path", "vda", "--active", "--verbose", "--pivot", "--base", "/u05/vm_linux_vm/linux_boot"],
            VirshArguments.BlockCommitActivePivot("linux_vm", "vda", "/u05/vm_linux_vm/linux_boot", 0));
    }

    [Fact]
    public void Blockcommit_base_with_spaces_and_commas_stays_one_argument()
    {
        var args = VirshArguments.BlockCommitActivePivot("linux_vm", "vda", "/u05/my disk, 'old'.qcow2", 0);
        Assert.Equal("/u05/my disk, 'old'.qcow2", args[Array.IndexOf(args, "--base") + 1]);
    }

    [Fact]
    public void Blockcommit_with_a_bandwidth_passes_it_in_MiB_per_second()
    {
        Assert.Equal(["blockcommit", "--domain", "linux_vm", "--path", "vdb", "--active", "--verbose", "--pivot", "--base", "/x/disco_secundario", "--bandwidth", "2"],
            VirshArguments.BlockCommitActivePivot("linux_vm", "vdb", "/x/disco_secundario", 2));
    }

    [Fact]
    public void Blockjob_info_asks_for_the_raw_form()
    {
        Assert.Equal(["blockjob", "--domain", "linux_vm", "--path", "vda", "--info", "--raw"], VirshArguments.BlockJobInfoRaw("linux_vm", "vda"));
    }

    [Fact]
    public void Blockjob_pivot_pivots_and_never_aborts()
    {
        var args = VirshArguments.BlockJobPivot("linux_vm", "vda");

        Assert.Equal(["blockjob", "--domain", "linux_vm", "--path", "vda", "--pivot"], args);
        Assert.DoesNotContain("--abort", args);
    }

    [Fact]
    public void Dumpxml_live_and_inactive()
    {
        Assert.Equal(["dumpxml", "--domain", "linux_vm"], VirshArguments.DumpXml("linux_vm", inactive: false));
        Assert.Equal(["dumpxml", "--domain", "linux_vm", "--inactive"], VirshArguments.DumpXml("linux_vm", inactive: true));
    }

    [Fact]
    public void Other_queries()
    {
        Assert.Equal(["domstate", "--domain", "linux_vm"], VirshArguments.DomState("linux_vm"));
        Assert.Equal(["snapshot-list", "--domain", "linux_vm", "--name"], VirshArguments.ListSnapshotNames("linux_vm"));
        Assert.Equal(["list", "--all", "--name"], VirshArguments.ListAllDomains());
        Assert.Equal(["qemu-agent-command", "--domain", "linux_vm", "--cmd", "{\"execute\":\"guest-ping\"}"], VirshArguments.AgentPing("linux_vm"));
        Assert.Equal(["define", "--file", "/tmp/a b.xml"], VirshArguments.Define("/tmp/a b.xml"));
    }

    public static TheoryData<string> HostileNames => new() { "-x", "--pivot", "a;b $(rm -rf /)", "vm with spaces", "it's \"quoted\"", "a,b" };

    private static string[][] EveryDomainCommand(string name) =>
    [
        VirshArguments.DumpXml(name, false),
        VirshArguments.DumpXml(name, true),
        VirshArguments.DomState(name),
        VirshArguments.ListSnapshotNames(name),
        VirshArguments.AgentPing(name),
        VirshArguments.SnapshotCreate(name, Snap, true, [new DiskSpec("vda", "/x/a.S")], ["vdb"]),
        VirshArguments.SnapshotDeleteMetadata(name, Snap),
        VirshArguments.BlockCommitActivePivot(name, "vda", "/x/a", 5),
        VirshArguments.BlockJobInfoRaw(name, "vda"),
        VirshArguments.BlockJobPivot(name, "vda"),
    ];

    [Theory]
    [MemberData(nameof(HostileNames))]
    public void Domain_name_stays_one_argument_right_after_its_option_name(string name)
    {
        var hostile = EveryDomainCommand(name);
        var plain = EveryDomainCommand("plain");

        for (var i = 0; i < hostile.Length; i++)
        {
            Assert.Equal("--domain", hostile[i][1]);
            Assert.Equal(name, hostile[i][2]);
            // Nothing else moved: the same argv as for a plain name, except that one element.
            Assert.Equal(plain[i][3..], hostile[i][3..]);
        }
    }

    [Theory]
    [MemberData(nameof(HostileNames))]
    public void Snapshot_name_stays_one_argument_right_after_its_option_name(string name)
    {
        var create = VirshArguments.SnapshotCreate("d", name, true, [], []);
        var delete = VirshArguments.SnapshotDeleteMetadata("d", name);

        Assert.Equal("--name", create[Array.IndexOf(create, name) - 1]);
        Assert.Equal("--snapshotname", delete[Array.IndexOf(delete, name) - 1]);
    }
}
