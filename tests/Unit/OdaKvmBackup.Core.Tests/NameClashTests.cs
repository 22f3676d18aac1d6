namespace OdaKvmBackup.Core.Tests;

/// <summary>Names in cases that the Stryker run of the safety logic (build.ps1 -Task Mutate) found untested; each
/// test names the mutant it kills (docs/mutation-survivors.md).</summary>
public class NameClashTests
{
    private const string Snap = BackupNames.DefaultSnapshotName;

    // Kills BackupNames.cs:66 (d.Target == target -> !=): with a third disk listed first, the two disks whose
    // overlays would clash each get an overlay named after their own file, beside it, not after the third one's.
    [Fact]
    public void Disks_whose_overlays_would_clash_get_names_from_their_own_files_whatever_the_order()
    {
        var paths = BackupNames.OverlayPaths("vm", [("vdc", "/y/c.img"), ("vda", "/x/a.img"), ("vdb", "/x/a.raw")], Snap, null);

        Assert.Equal("/y/c." + Snap, paths["vdc"]);
        Assert.Equal("/x/a.vda." + Snap, paths["vda"]);
        Assert.Equal("/x/a.vdb." + Snap, paths["vdb"]);
    }

    // Kills BackupNames.cs:183 (StartsWith("repaired-") ? name[9..] : name -> true ? ...): a run's own retention
    // folder (yyyyMMdd-HHmmss) is recognised with its time, as a repaired one is, so that pruning by age finds both.
    [Fact]
    public void A_runs_retention_folder_and_a_repaired_one_both_give_their_time()
    {
        Assert.True(BackupNames.TryParseRetentionFolder("20261206-151200", out var run));
        Assert.Equal(new DateTime(2026, 12, 6, 15, 12, 0, DateTimeKind.Utc), run);
        Assert.True(BackupNames.TryParseRetentionFolder("repaired-20261206-151200", out var repaired));
        Assert.Equal(run, repaired);
    }
}
