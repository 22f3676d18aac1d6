namespace OdaKvmBackup.Core.Tests;

public class BackupNamesTests
{
    private const string Snap = BackupNames.DefaultSnapshotName;

    [Theory]
    [InlineData("/x/linux_boot", "/x/linux_boot.FILE_STAGE_BACKUP.TEMP")]
    [InlineData("/x/a.qcow2", "/x/a.FILE_STAGE_BACKUP.TEMP")]
    [InlineData("/var/lib/libvirt/images/x1-vdb.raw", "/var/lib/libvirt/images/x1-vdb.FILE_STAGE_BACKUP.TEMP")]
    [InlineData("/x/a.b.qcow2", "/x/a.b.FILE_STAGE_BACKUP.TEMP")]
    [InlineData("/srv/vm images/disk a.qcow2", "/srv/vm images/disk a.FILE_STAGE_BACKUP.TEMP")]
    [InlineData("/x.d/linux_boot", "/x.d/linux_boot.FILE_STAGE_BACKUP.TEMP")]
    // A disk still on an overlay gets the 2-deep name libvirt gives it (lab.md E3).
    [InlineData("/v/x1-vda.FILE_STAGE_BACKUP.TEMP", "/v/x1-vda.FILE_STAGE_BACKUP.FILE_STAGE_BACKUP.TEMP")]
    public void Beside_the_disk_the_overlay_is_named_as_libvirt_would(string source, string expected)
    {
        Assert.Equal(expected, BackupNames.OverlayPath("linux_vm", source, Snap, null));
    }

    [Fact]
    public void In_an_overlay_folder_the_name_starts_with_the_domain()
    {
        Assert.Equal("/ovl/linux_vm.linux_boot.FILE_STAGE_BACKUP.TEMP", BackupNames.OverlayPath("linux_vm", "/x/linux_boot", Snap, "/ovl"));
        Assert.Equal("/ovl/linux_vm.a.FILE_STAGE_BACKUP.TEMP", BackupNames.OverlayPath("linux_vm", "/x/a.qcow2", Snap, "/ovl"));
    }

    [Fact]
    public void In_an_overlay_folder_disks_of_two_domains_with_the_same_file_name_do_not_collide()
    {
        Assert.NotEqual(BackupNames.OverlayPath("vm1", "/a/boot", Snap, "/ovl"), BackupNames.OverlayPath("vm2", "/b/boot", Snap, "/ovl"));
    }

    [Fact]
    public void Another_snapshot_name_is_used_as_given()
    {
        Assert.Equal("/x/a.nightly", BackupNames.OverlayPath("d", "/x/a.qcow2", "nightly", null));
    }

    [Theory]
    [InlineData("/x/linux_boot.FILE_STAGE_BACKUP.TEMP", true)]
    [InlineData("/ovl/linux_vm.linux_boot.FILE_STAGE_BACKUP.TEMP", true)]
    [InlineData("/x/linux_boot", false)]
    [InlineData("/x/a.qcow2", false)]
    [InlineData("/x/FILE_STAGE_BACKUP.TEMP", false)]
    [InlineData("/x/a.FILE_STAGE_BACKUP.TEMP.qcow2", false)]
    [InlineData("/x/a.file_stage_backup.temp", false)]
    public void LooksLikeOverlay_matches_only_names_made_with_that_snapshot_name(string path, bool expected)
    {
        Assert.Equal(expected, BackupNames.LooksLikeOverlay(path, Snap));
    }

    [Fact]
    public void Every_overlay_path_made_looks_like_an_overlay()
    {
        Assert.True(BackupNames.LooksLikeOverlay(BackupNames.OverlayPath("d", "/x/a.qcow2", "nightly", null), "nightly"));
        Assert.True(BackupNames.LooksLikeOverlay(BackupNames.OverlayPath("d", "/x/a", "nightly", "/o"), "nightly"));
    }

    [Fact]
    public void Run_id_is_the_UTC_time_to_the_second_and_names_the_set_and_retention_folders()
    {
        var runId = BackupNames.RunId(new DateTime(2026, 11, 28, 10, 15, 0, 999, DateTimeKind.Utc));

        Assert.Equal("20261128-101500", runId);
        Assert.Equal("linux_vm/20261128-101500", BackupNames.SetFolder("linux_vm", runId));
        Assert.Equal("linux_vm/20261128-101500", BackupNames.RetentionFolder("linux_vm", runId));
        Assert.Equal("linux_vm/repaired-20261128-101500", BackupNames.RepairFolder("linux_vm", new DateTime(2026, 11, 28, 10, 15, 0, DateTimeKind.Utc)));
    }

    [Fact]
    public void Disks_with_different_file_names_keep_their_own_names_in_the_set()
    {
        var names = BackupNames.SetFileNames([("vda", "/u05/vm_x/linux_boot"), ("vdb", "/u05/vdisk_x/disco_secundario")]);

        Assert.Equal("linux_boot", names["vda"]);
        Assert.Equal("disco_secundario", names["vdb"]);
    }

    [Fact]
    public void Two_disks_with_the_same_file_name_in_different_folders_get_distinct_set_file_names()
    {
        var names = BackupNames.SetFileNames([("vda", "/a/disk"), ("vdb", "/b/disk"), ("vdc", "/c/other")]);

        Assert.Equal("vda-disk", names["vda"]);
        Assert.Equal("vdb-disk", names["vdb"]);
        Assert.Equal("other", names["vdc"]);
    }

    [Fact]
    public void A_disk_whose_own_file_is_named_like_another_disks_prefixed_name_still_gets_a_name_of_its_own()
    {
        // vda and vdb share "disk", so they would become vda-disk and vdb-disk; but vdc's own file is "vda-disk".
        var names = BackupNames.SetFileNames([("vda", "/a/disk"), ("vdb", "/b/disk"), ("vdc", "/c/vda-disk")]);

        AssertDistinct(names.Values);
        Assert.Equal(3, names.Count);
    }

    [Fact]
    public void Retained_overlays_of_two_disks_with_the_same_file_name_get_distinct_names()
    {
        var names = BackupNames.RetainedNames([("vda", "/a/disk.FILE_STAGE_BACKUP.TEMP"), ("vdb", "/b/disk.FILE_STAGE_BACKUP.TEMP"), ("vdc", "/c/vdb-disk.FILE_STAGE_BACKUP.TEMP")]);

        AssertDistinct(names.Values);
        Assert.All(names, n => Assert.EndsWith("." + Snap, n.Value, StringComparison.Ordinal));
    }

    public static TheoryData<string[]> AwkwardSets => new()
    {
        { ["/a/disk", "/b/disk"] },
        { ["/a/disk", "/b/disk", "/c/disk"] },
        { ["/a/disk", "/b/disk", "/c/vda-disk", "/d/vdb-disk"] },
        { ["/a/x", "/b/vda-x", "/c/x"] },
        { ["/a/backup.json"] },
        { ["/a/domain.xml", "/b/linux_boot"] },
        { ["/a/x", "/b/x.partial"] },
        { ["/a/x.partial", "/b/x", "/c/x"] },
        // Issue 15: each copy has its digest list "<file>.digests" beside it (and "<file>.digests.partial" while written).
        { ["/a/x", "/b/x.digests"] },
        { ["/a/x", "/b/x.digests.partial"] },
        { ["/a/x.digests", "/b/x", "/c/x"] },
        { ["/a/x.digests"] },
    };

    [Theory]
    [MemberData(nameof(AwkwardSets))]
    public void Every_file_name_in_a_set_is_distinct_from_every_other_name_the_set_uses(string[] sources)
    {
        var disks = sources.Select((s, i) => ($"vd{(char)('a' + i)}", s)).ToList();

        var names = BackupNames.SetFileNames(disks);

        // The set holds each copy under its final name and, while it is written, under its partial name, beside
        // the manifest and the domain XML: no two of these may ever be the same file.
        var lists = names.Values.Select(n => n + BackupNames.DigestListSuffix).ToList();
        var used = names.Values.Concat(names.Values.Select(BackupNames.Partial)).Concat(lists).Concat(lists.Select(BackupNames.Partial))
            .Concat([BackupNames.ManifestFileName, BackupNames.DomainXmlFileName]).ToList();
        AssertDistinct(used);
        Assert.Equal(disks.Select(d => d.Item1), names.Keys.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_partial_copy_is_named_after_its_final_name()
    {
        Assert.Equal("linux_boot.partial", BackupNames.Partial("linux_boot"));
    }

    [Fact]
    public void Probe_names_are_hidden_and_never_the_same_twice()
    {
        var a = BackupNames.ProbeFileName();
        var b = BackupNames.ProbeFileName();

        Assert.StartsWith(".", a, StringComparison.Ordinal);
        Assert.NotEqual(a, b);
    }

    private static void AssertDistinct(IEnumerable<string> names)
    {
        var list = names.ToList();
        var twice = list.GroupBy(n => n, StringComparer.Ordinal).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(twice.Count == 0, $"used more than once: {string.Join(", ", twice)} (all: {string.Join(", ", list)})");
    }

    [Theory]
    [InlineData(BackupNames.DefaultSnapshotName)]
    [InlineData("nightly")]
    [InlineData("bk-2026_12.x")]
    public void A_snapshot_name_of_letters_digits_dots_underscores_and_dashes_is_valid(string name)
    {
        BackupNames.RequireValidSnapshotName(name);
    }

    [Theory]
    [InlineData("")]
    [InlineData("a/b")]
    [InlineData("../x")]
    [InlineData(".x")]
    [InlineData("-x")]
    [InlineData("a b")]
    [InlineData("a\tb")]
    [InlineData("a,b")]
    public void A_snapshot_name_that_could_reach_another_folder_read_as_an_option_or_break_a_diskspec_is_InvalidSnapshotName(string name)
    {
        var ex = Assert.Throws<BackupException>(() => BackupNames.RequireValidSnapshotName(name));
        Assert.Equal(ErrorIds.InvalidSnapshotName, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidArgument, ex.Category);
    }
}
