using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Core.Tests;

public class OverlayNamingTests
{
    private const string Snap = OverlayNaming.DefaultSnapshotName;

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
        Assert.Equal(expected, OverlayNaming.OverlayPath("linux_vm", source, Snap, null));
    }

    [Fact]
    public void In_an_overlay_folder_the_name_starts_with_the_domain()
    {
        Assert.Equal("/ovl/linux_vm.linux_boot.FILE_STAGE_BACKUP.TEMP", OverlayNaming.OverlayPath("linux_vm", "/x/linux_boot", Snap, "/ovl"));
        Assert.Equal("/ovl/linux_vm.a.FILE_STAGE_BACKUP.TEMP", OverlayNaming.OverlayPath("linux_vm", "/x/a.qcow2", Snap, "/ovl"));
    }

    [Fact]
    public void In_an_overlay_folder_disks_of_two_domains_with_the_same_file_name_do_not_collide()
    {
        Assert.NotEqual(OverlayNaming.OverlayPath("vm1", "/a/boot", Snap, "/ovl"), OverlayNaming.OverlayPath("vm2", "/b/boot", Snap, "/ovl"));
    }

    [Fact]
    public void Another_snapshot_name_is_used_as_given()
    {
        Assert.Equal("/x/a.nightly", OverlayNaming.OverlayPath("d", "/x/a.qcow2", "nightly", null));
    }

    [Theory]
    [InlineData("/x/linux_boot.FILE_STAGE_BACKUP.TEMP", true)]
    [InlineData("/ovl/linux_vm.linux_boot.FILE_STAGE_BACKUP.TEMP", true)]
    [InlineData("/x/linux_boot", false)]
    [InlineData("/x/a.qcow2", false)]
    [InlineData("/x/FILE_STAGE_BACKUP.TEMP", false)]
    [InlineData("/x/a.FILE_STAGE_BACKUP.TEMP.qcow2", false)]
    [InlineData("/x/a.file_stage_backup.temp", false)]
    public void LooksLikeOurOverlay_matches_only_names_this_module_makes(string path, bool expected)
    {
        Assert.Equal(expected, OverlayNaming.LooksLikeOurOverlay(path, Snap));
    }

    [Fact]
    public void Every_overlay_path_made_looks_like_ours()
    {
        Assert.True(OverlayNaming.LooksLikeOurOverlay(OverlayNaming.OverlayPath("d", "/x/a.qcow2", "nightly", null), "nightly"));
        Assert.True(OverlayNaming.LooksLikeOurOverlay(OverlayNaming.OverlayPath("d", "/x/a", "nightly", "/o"), "nightly"));
    }
}
