using System.Xml.Linq;
using System.Text.Json;
using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

[Collection(StateCollection.Name)]
public sealed class BootTestServiceTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private readonly StateFolder _state = new();
    private readonly TempFolder _backup = new();
    private readonly FakeHost _host = new();
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
        var result = await new VerifyService(_host.Tools.QemuImg, _sink).VerifyAsync(set, store, CancellationToken.None);
        var before = result.Errors.Count;
        await Service.RunAsync(set, store, result, new BootTestOptions(timeout, "login:"), CancellationToken.None);
        var errors = result.Errors.Skip(before).ToList();
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
    public async Task A_throw_away_VM_that_cannot_be_destroyed_is_a_failure_on_the_result_after_the_boot_it_proved()
    {
        _host.OnDestroy = call => Results.VirshError($"error: Failed to destroy domain '{call.ValueOf("--domain")}'\nerror: Timed out during operation: cannot acquire state change lock\n");

        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30));

        // The boot was proven, and the result still says so; what the cleanup left is the set's one failure.
        Assert.Equal("guest agent answered guest-ping", result.BootResult);
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.BootTestLeftover, error.ErrorId);
        Assert.Contains($"the domain '{result.BootTestDomain}' could not be destroyed", error.Message, StringComparison.Ordinal);
        Assert.Contains("virsh destroy " + result.BootTestDomain, error.RecommendedAction, StringComparison.Ordinal);
        Assert.False(result.Passed);
        Assert.Equal([error.Message], result.Problems);
        // Its record stays, so the next Test-KvmBackup retries the cleanup.
        Assert.NotEmpty(Leftovers());
    }

    [Fact]
    public async Task A_boot_test_runs_a_transient_copy_on_overlays_and_leaves_nothing_behind()
    {
        var (set, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(30));

        Assert.Empty(errors);
        Assert.True(result.Passed);
        Assert.Equal("guest agent answered guest-ping", result.BootResult);
        Assert.NotNull(result.BootSeconds);
        Assert.StartsWith("vm1-boottest-", result.BootTestDomain, StringComparison.Ordinal);
        Assert.Single(_host.CommandLines, c => c[0] == "virsh" && c[1] == "create");
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "define"); // transient: gone once destroyed
        // The throw-away VM: its own name, no UUID of the source (libvirt makes one), and no network at all.
        var (_, given) = Assert.Single(_host.Given);
        Assert.Contains($"<name>{result.BootTestDomain}</name>", given, StringComparison.Ordinal);
        Assert.DoesNotContain("<uuid>", given, StringComparison.Ordinal);
        Assert.DoesNotContain("<interface", given, StringComparison.Ordinal);
        Assert.Contains("<interface", Xmls.Domain("vm1", "/a", "/b"), StringComparison.Ordinal); // the saved definition had one
        Assert.Contains("<uuid>", Xmls.Domain("vm1", "/a", "/b"), StringComparison.Ordinal);
        var overlays = _host.CommandLines.Where(c => c[0] == "qemu-img" && c[1] == "create").ToList();
        Assert.Equal(2, overlays.Count);
        Assert.All(overlays, c => Assert.Equal("qcow2", c[Array.IndexOf(c, "-f") + 1]));
        Assert.Equal(set.Disks.Select(d => d.Location), overlays.Select(c => c[Array.IndexOf(c, "-b") + 1]));
        Assert.Equal(["qcow2", "raw"], overlays.Select(c => c[Array.IndexOf(c, "-F") + 1]));
        // Made without opening the copy again (-u, with the size the inspection read): only QEMU opens it.
        Assert.All(overlays, c => Assert.Equal(Sets.DiskSize.ToString(System.Globalization.CultureInfo.InvariantCulture), c[Array.IndexOf(c, "-u") + 2]));
        Assert.Contains($"<emulator>{FakeHost.HostEmulator}</emulator>", given, StringComparison.Ordinal);
        Assert.Equal(["virsh", "domcapabilities", "--virttype", "qemu", "--arch", "x86_64", "--machine", "pc"], Assert.Single(_host.CommandLines, c => c[1] == "domcapabilities"));
        Assert.Contains(_host.CommandLines, c => c[0] == "virsh" && c[1] == "destroy" && c.Contains(result.BootTestDomain));
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
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "qemu-agent-command");
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
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh");
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
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "qemu-img" && c[1] == "create");
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "create");
        Assert.All(_host.CommandLines.Where(c => c[0] == "qemu-img" && c[1] == "info"), c => Assert.Contains("-f", c)); // the format is given, never probed
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
            var overlays = _host.CommandLines.Where(c => c[0] == "qemu-img" && c[1] == "create").Select(c => c.Last(a => a.StartsWith('/'))).ToList(); // qemu-img create [options] file [size]
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
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "qemu-img" && c[1] == "create");
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "create");
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_guest_whose_console_writes_without_end_is_read_no_further_than_the_cap_and_times_out_saying_so()
    {
        _host.AgentAnswers = false;
        _host.ConsoleOutput = string.Concat(Enumerable.Repeat(new string('#', 1023) + "\n", (int)(ConsoleLogReader.CapBytes >> 10) + 2048)) + "vm1 login: ";
        var (_, result, errors) = await BootAsync(new LocalBackupStore(_backup.Path), TimeSpan.FromSeconds(2), withoutAgent: true);
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.BootTestTimedOut, error.ErrorId); // the pattern came after the cap: never read
        Assert.Contains("more than 16 MiB", error.Message, StringComparison.Ordinal);
        Assert.False(result.Passed);
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_qcow2_copy_of_another_virtual_size_than_backup_json_records_is_refused()
    {
        var store = new LocalBackupStore(_backup.Path);
        var set = await Sets.WriteAsync(store, _backup.Path, "vm1", T0);
        set.Manifest.Disks[0].VirtualSizeBytes = 64L << 30;
        var result = await new VerifyService(_host.Tools.QemuImg, _sink).VerifyAsync(set, store, CancellationToken.None);
        var before = result.Errors.Count;
        await Service.RunAsync(set, store, result, new BootTestOptions(TimeSpan.FromSeconds(5), "login:"), CancellationToken.None);
        var errors = result.Errors.Skip(before).ToList();
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.BackupCopyUnsafe, error.ErrorId);
        Assert.Contains($"its virtual size is {Sets.DiskSize} bytes, backup.json says {64L << 30}", error.Message, StringComparison.Ordinal);
        AssertNothingLeft();
    }

    [Theory]
    [InlineData("<type arch='x86_64' machine='--emulatorbin=/tmp/evil'>hvm</type>", "machine")]
    [InlineData("<type arch='x86_64 --emulatorbin /tmp/evil' machine='pc'>hvm</type>", "arch")]
    public async Task An_arch_or_machine_that_is_not_a_plain_name_is_refused_before_virsh_sees_it(string type, string named)
    {
        var store = new LocalBackupStore(_backup.Path);
        var set = await Sets.WriteAsync(store, _backup.Path, "vm1", T0);
        var saved = Path.Combine(_backup.Path, set.SetFolder, BackupNames.DomainXmlFileName);
        File.WriteAllText(saved, File.ReadAllText(saved).Replace("<type arch='x86_64' machine='pc'>hvm</type>", type, StringComparison.Ordinal));
        var result = await new VerifyService(_host.Tools.QemuImg, _sink).VerifyAsync(set, store, CancellationToken.None);
        var before = result.Errors.Count;
        await Service.RunAsync(set, store, result, new BootTestOptions(TimeSpan.FromSeconds(5), "login:"), CancellationToken.None);
        var errors = result.Errors.Skip(before).ToList();
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, error.ErrorId);
        Assert.Contains($"the saved {named} ", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] is "domcapabilities" or "create");
        AssertNothingLeft();
    }

    [Fact]
    public async Task Leftovers_in_a_scratch_folder_of_their_own_are_cleaned_up_and_a_record_naming_another_folder_is_left_alone()
    {
        using var scratch = new TempFolder();
        var name = "vm1-boottest-5c5c5c5c";
        var folder = Path.Combine(scratch.Path, name);
        PrivateFiles.CreateFolder(StateDirectory.BootTestDirectory); // the records stay in the state folder
        WriteRecord(name, folder, int.MaxValue - 7, DateTime.UtcNow.AddHours(-1));
        _host.Domains[name] = new FakeDomain { Xml = OnOverlay(name, folder), Transient = true };
        var stranger = "vm1-boottest-0d0d0d0d";
        var notOurs = Directory.CreateDirectory(Path.Combine(scratch.Path, "etc")).FullName;
        WriteRecord(stranger, notOurs, int.MaxValue - 7, DateTime.UtcNow.AddHours(-1));

        var cleaned = await Service.CleanLeftoversAsync(CancellationToken.None);

        Assert.Contains(name, Assert.Single(cleaned), StringComparison.Ordinal);
        Assert.False(Directory.Exists(folder));
        Assert.True(Directory.Exists(notOurs));
        Assert.Contains(_sink.Warnings, w => w.Contains(stranger, StringComparison.Ordinal) && w.Contains("left alone", StringComparison.Ordinal));
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
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "destroy");
        Assert.Contains(_sink.Warnings, w => w.Contains("not a leftover boot test", StringComparison.Ordinal));
    }
}

[Collection(StateCollection.Name)]
public sealed class RetainedOverlayTests : IDisposable
{
    private readonly TempFolder _retention = new();
    private readonly FakeHost _host = new();

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
