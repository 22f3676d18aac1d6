using System.Xml.Linq;
using System.Text.Json;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

[Collection(StateCollection.Name)]
public sealed class BootTestServiceTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private readonly StateFolder _state = new();
    private readonly TempFolder _backup = new();
    private readonly FakeLibvirt _host = new();
    private readonly RecordingSink _sink = new();

    public void Dispose()
    {
        _backup.Dispose();
        _state.Dispose();
    }

    private BootTestService Service => new(_host.Tools, _sink);

    private async Task<(BackupSetInfo, BackupSetTestResult, List<BackupException>)> BootAsync(IBackupStore store, TimeSpan timeout, bool withoutAgent = false, bool overwrite = false)
    {
        var set = overwrite ? (await BackupCatalog.LoadAsync(store, BackupNames.SetFolder("vm1", BackupNames.RunId(T0)), CancellationToken.None))!
            : await Sets.WriteAsync(store, _backup.Path, "vm1", T0);
        if (withoutAgent)
        {
            // A guest without qemu-guest-agent: its saved definition has no agent channel, only the serial console.
            var saved = Path.Combine(_backup.Path, set.SetFolder, BackupNames.DomainXmlFileName);
            var xml = XDocument.Parse(File.ReadAllText(saved));
            xml.Descendants("channel").Remove();
            File.WriteAllText(saved, xml.ToString());
        }
        var result = await new VerifyService(_host.Tools.QemuImg, _sink).VerifyAsync(set, store, [], CancellationToken.None);
        var errors = new List<BackupException>();
        await Service.RunAsync(set, store, result, new BootTestOptions(timeout, "login:"), errors, CancellationToken.None);
        return (set, result, errors);
    }

    /// <summary>No throw-away domain, and nothing under the boot tests' state folder.</summary>
    private void AssertNothingLeft()
    {
        Assert.DoesNotContain(_host.Domains.Keys, k => k.Contains("boottest", StringComparison.Ordinal));
        Assert.Empty(Leftovers());
    }

    private IEnumerable<string> Leftovers() => Directory.Exists(StateDirectory.BootTestDirectory)
        ? Directory.EnumerateFileSystemEntries(StateDirectory.BootTestDirectory) : [];

    [Fact]
    public async Task A_boot_test_runs_a_transient_copy_on_overlays_and_leaves_nothing_behind()
    {
        var (set, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30));

        Assert.Empty(errors);
        Assert.True(result.Passed);
        Assert.Equal("guest agent answered guest-ping", result.BootResult);
        Assert.NotNull(result.BootSeconds);
        Assert.StartsWith("vm1-boottest-", result.BootTestDomain, StringComparison.Ordinal);
        Assert.Single(_host.Calls, c => c[0] == "virsh" && c[1] == "create");
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh" && c[1] == "define"); // transient: gone once destroyed
        // The throw-away VM: its own name, no UUID of the source (libvirt makes one), and no network at all.
        var (_, given) = Assert.Single(_host.Given);
        Assert.Contains($"<name>{result.BootTestDomain}</name>", given, StringComparison.Ordinal);
        Assert.DoesNotContain("<uuid>", given, StringComparison.Ordinal);
        Assert.DoesNotContain("<interface", given, StringComparison.Ordinal);
        Assert.Contains("<interface", Xmls.Domain("vm1", "/a", "/b"), StringComparison.Ordinal); // the saved definition had one
        Assert.Contains("<uuid>", Xmls.Domain("vm1", "/a", "/b"), StringComparison.Ordinal);
        var overlays = _host.Calls.Where(c => c[0] == "qemu-img" && c[1] == "create").ToList();
        Assert.Equal(2, overlays.Count);
        Assert.All(overlays, c => Assert.Equal("qcow2", c[Array.IndexOf(c, "-f") + 1]));
        Assert.Equal(set.Disks.Select(d => d.Location), overlays.Select(c => c[Array.IndexOf(c, "-b") + 1]));
        Assert.Equal(["qcow2", "raw"], overlays.Select(c => c[Array.IndexOf(c, "-F") + 1]));
        Assert.Contains(_host.Calls, c => c[0] == "virsh" && c[1] == "destroy" && c.Contains(result.BootTestDomain));
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_guest_without_agent_has_booted_once_its_console_shows_the_pattern()
    {
        _host.AgentAnswers = false;
        _host.ConsoleOutput = "Booting...\nvm1 login: ";
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30), withoutAgent: true);
        Assert.Empty(errors);
        Assert.True(result.Passed);
        Assert.Equal("console showed 'login:'", result.BootResult);
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh" && c[1] == "qemu-agent-command");
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_guest_without_agent_whose_console_never_shows_the_pattern_times_out_says_what_it_showed_and_leaves_nothing()
    {
        _host.AgentAnswers = false;
        _host.ConsoleOutput = "Kernel panic - not syncing: VFS: Unable to mount root fs";
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(1), withoutAgent: true);
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.BootTestTimedOut, error.ErrorId);
        Assert.Contains("its console never showed 'login:'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Kernel panic", error.Message, StringComparison.Ordinal);
        Assert.False(result.Passed);
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_boot_that_times_out_is_an_error_and_still_leaves_nothing_behind()
    {
        _host.AgentAnswers = false;
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(1));
        Assert.Equal(ErrorIds.BootTestTimedOut, Assert.Single(errors).ErrorId);
        Assert.False(result.Passed);
        Assert.Equal("timed out", result.BootResult);
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_set_on_a_remote_store_is_not_booted_from_there()
    {
        var (_, _, errors) = await BootAsync(new FakeRemoteStore(_backup.Path), TimeSpan.FromSeconds(5));
        Assert.Equal(ErrorIds.BootTestNeedsLocalSet, Assert.Single(errors).ErrorId);
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh");
    }

    /// <summary>qemu-img info's answer for a copy that names other files of the host.</summary>
    private static string Info(string format, long virtualSize, string? backing = null, string? dataFile = null) =>
        "{ \"format\": \"" + format + "\", \"virtual-size\": " + virtualSize + ", \"actual-size\": 200704"
        + (backing is null ? "" : ", \"backing-filename\": \"" + backing + "\", \"full-backing-filename\": \"" + backing + "\", \"backing-filename-format\": \"raw\"")
        + ", \"format-specific\": { \"type\": \"" + format + "\", \"data\": { \"compat\": \"1.1\"" + (dataFile is null ? "" : ", \"data-file\": \"" + dataFile + "\", \"data-file-raw\": false") + " } } }";

    public static TheoryData<string, string?, string?, (string Format, string Error)?, string> UnsafeCopies => new()
    {
        { "boot", Info("qcow2", Sets.DiskSize, backing: "/etc/shadow"), null, null, "backing file /etc/shadow" },
        { "boot", Info("qcow2", Sets.DiskSize, dataFile: "/dev/sda"), null, null, "external data file /dev/sda" },
        { "boot", null, null, ("qcow2", "Image is not in qcow2 format"), "not a qcow2 image" },
        { "data", Info("raw", Sets.DiskSize * 2), null, null, "virtual size" },
        { "data", null, "QFI\u00fb", null, "qcow2" },
    };

    [Theory]
    [MemberData(nameof(UnsafeCopies))]
    public async Task A_copy_that_is_not_a_plain_image_in_its_manifests_format_is_refused_before_any_overlay_or_VM_is_made(
        string file, string? info, string? header, (string Format, string Error)? infoError, string named)
    {
        if (info is not null)
            _host.ImageInfos[file] = info;
        if (infoError is { } failure)
            _host.ImageInfoErrors[file] = failure;
        if (header is not null)
        {
            // A qcow2 header at the start of a copy that backup.json calls raw.
            var set = await Sets.WriteAsync(new LocalBackupStore(_backup.Path), _backup.Path, "vm1", T0);
            using (var stream = File.OpenWrite(Path.Combine(_backup.Path, set.SetFolder, file)))
                stream.Write(System.Text.Encoding.Latin1.GetBytes(header));
        }
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30), overwrite: header is not null);

        var error = Assert.Single(errors);
        Assert.Equal("BackupCopyUnsafe", error.ErrorId);
        Assert.Contains($"/{file}", error.Message, StringComparison.Ordinal);
        Assert.Contains(named, error.Message, StringComparison.Ordinal);
        Assert.NotNull(error.RecommendedAction);
        Assert.False(result.Passed);
        Assert.DoesNotContain(_host.Calls, c => c[0] == "qemu-img" && c[1] == "create");
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh" && c[1] == "create");
        Assert.All(_host.Calls.Where(c => c[0] == "qemu-img" && c[1] == "info"), c => Assert.Contains("-f", c)); // the format is given, never probed
        AssertNothingLeft();
    }

    [Fact]
    public async Task The_overlays_and_console_log_go_in_the_scratch_folder_ODAKVMBACKUP_BOOT_TEST_DIR_names()
    {
        using var scratch = new TempFolder();
        var previous = Environment.GetEnvironmentVariable("ODAKVMBACKUP_BOOT_TEST_DIR");
        Environment.SetEnvironmentVariable("ODAKVMBACKUP_BOOT_TEST_DIR", scratch.Path);
        try
        {
            var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30));
            Assert.Empty(errors);
            Assert.True(result.Passed);
            var overlays = _host.Calls.Where(c => c[0] == "qemu-img" && c[1] == "create").Select(c => c[^1]).ToList();
            Assert.Equal(2, overlays.Count);
            Assert.All(overlays, o => Assert.StartsWith(scratch.Path + "/", o, StringComparison.Ordinal));
            var (_, given) = Assert.Single(_host.Given);
            Assert.Contains($"<source path=\"{scratch.Path}/", given, StringComparison.Ordinal); // the console log
            Assert.Empty(Directory.EnumerateFileSystemEntries(scratch.Path));
            AssertNothingLeft();
        }
        finally
        {
            Environment.SetEnvironmentVariable("ODAKVMBACKUP_BOOT_TEST_DIR", previous);
        }
    }

    [Fact]
    public async Task A_scratch_folder_without_room_for_the_overlays_is_refused_before_anything_is_created()
    {
        // A copy of 1 PiB: its overlay is asked a tenth of it, more than any test machine has free.
        _host.ImageInfos["boot"] = Info("qcow2", 1L << 50);
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30));
        var error = Assert.Single(errors);
        Assert.Equal("NotEnoughSpaceForBootTest", error.ErrorId);
        Assert.Contains(StateDirectory.BootTestDirectory, error.Message, StringComparison.Ordinal);
        Assert.Contains("ODAKVMBACKUP_BOOT_TEST_DIR", error.RecommendedAction, StringComparison.Ordinal);
        Assert.False(result.Passed);
        Assert.DoesNotContain(_host.Calls, c => c[0] == "qemu-img" && c[1] == "create");
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh" && c[1] == "create");
        AssertNothingLeft();
    }

    private static void WriteRecord(string domain, string folder, int pid, DateTime processStart)
    {
        PrivateFiles.CreateFolder(folder);
        File.WriteAllText(Path.Combine(folder, "overlay.qcow2"), "x");
        var record = new BootTestRecord { DomainName = domain, Folder = folder, SetLocation = "/b/vm1/run", ProcessId = pid, ProcessStartUtc = processStart };
        File.WriteAllBytes(Path.Combine(StateDirectory.BootTestDirectory, StateDirectory.FileNameFor(domain) + ".json"), JsonSerializer.SerializeToUtf8Bytes(record));
    }

    private static string OnOverlay(string name, string folder) =>
        $"<domain><name>{name}</name><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{folder}/overlay.qcow2'/><target dev='vda'/></disk></devices></domain>";

    [Fact]
    public async Task Leftovers_of_a_killed_boot_test_are_cleaned_up_by_the_next_one()
    {
        var name = "vm1-boottest-0badc0de";
        var folder = Path.Combine(StateDirectory.BootTestDirectory, name);
        WriteRecord(name, folder, int.MaxValue - 7, DateTime.UtcNow.AddHours(-1)); // that process is gone
        _host.Domains[name] = new FakeDomain { Xml = OnOverlay(name, folder), Transient = true };

        var cleaned = await Service.CleanLeftoversAsync(CancellationToken.None);

        Assert.Contains(name, Assert.Single(cleaned), StringComparison.Ordinal);
        Assert.False(_host.Domains.ContainsKey(name));
        Assert.Empty(Leftovers());
    }

    [Fact]
    public async Task A_boot_test_still_running_in_another_process_is_left_alone()
    {
        var name = "vm1-boottest-0000aaaa";
        var folder = Path.Combine(StateDirectory.BootTestDirectory, name);
        WriteRecord(name, folder, Environment.ProcessId, System.Diagnostics.Process.GetCurrentProcess().StartTime.ToUniversalTime());
        _host.Domains[name] = new FakeDomain { Xml = OnOverlay(name, folder), Transient = true };
        Assert.Empty(await Service.CleanLeftoversAsync(CancellationToken.None));
        Assert.True(_host.Domains.ContainsKey(name));
        Assert.True(Directory.Exists(folder));
    }

    [Fact]
    public async Task A_domain_whose_disks_are_not_in_the_boot_test_folder_is_never_destroyed()
    {
        var name = "vm1-boottest-11112222";
        var folder = Path.Combine(StateDirectory.BootTestDirectory, name);
        WriteRecord(name, folder, int.MaxValue - 7, DateTime.UtcNow.AddHours(-1));
        _host.Domains[name] = new FakeDomain { Xml = OnOverlay(name, "/u05/app/sharedrepo/vmstore") };
        Assert.Empty(await Service.CleanLeftoversAsync(CancellationToken.None));
        Assert.True(_host.Domains.ContainsKey(name));
        Assert.DoesNotContain(_host.Calls, c => c[0] == "virsh" && c[1] == "destroy");
        Assert.Contains(_sink.Warnings, w => w.Contains("not a leftover boot test", StringComparison.Ordinal));
    }
}

[Collection(StateCollection.Name)]
public sealed class RetainedOverlayTests : IDisposable
{
    private readonly TempFolder _retention = new();
    private readonly FakeLibvirt _host = new();

    public void Dispose() => _retention.Dispose();

    [Fact]
    public async Task Retained_overlays_that_a_domain_still_uses_are_not_removed()
    {
        var run = Directory.CreateDirectory(_retention.Combine("vm1", "20261101-220000")).FullName;
        var overlay = Path.Combine(run, "vm1.FILE_STAGE_BACKUP.TEMP");
        File.WriteAllText(overlay, "overlay");
        Directory.CreateDirectory(_retention.Combine("vm1", "not-a-run"));
        _host.Add("vm1", Xmls.Domain("vm1", overlay, "/dev/sdb"));

        var runs = PruneService.ListRetained(_retention.Path, null);
        var found = Assert.Single(runs);
        Assert.Equal(new DateTime(2026, 11, 1, 22, 0, 0, DateTimeKind.Utc), found.TimeUtc);
        var ex = await Assert.ThrowsAsync<BackupException>(() => new PruneService(_host.Tools.Virsh).RemoveRetainedAsync(found, CancellationToken.None));
        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        Assert.True(File.Exists(overlay));

        _host.Domains.Remove("vm1");
        await new PruneService(_host.Tools.Virsh).RemoveRetainedAsync(found, CancellationToken.None);
        Assert.False(Directory.Exists(run));
        Assert.True(Directory.Exists(_retention.Combine("vm1", "not-a-run")));
    }
}
