using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

public class QemuImgClientTests
{
    [Fact]
    public void Real_qcow2_info_without_backing_file()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("linux_boot.qemu-img-info.json"));

        Assert.Equal("qcow2", info.Format);
        Assert.Equal(67108864, info.VirtualSize);
        Assert.Equal(1056768, info.ActualSize);
        Assert.Null(info.BackingFile);
        Assert.Null(info.BackingFormat);
    }

    [Fact]
    public void Real_raw_info()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("disco_secundario.qemu-img-info.json"));

        Assert.Equal("raw", info.Format);
        Assert.Equal(67108864, info.VirtualSize);
        Assert.Equal(67112960, info.ActualSize);
        Assert.Null(info.BackingFile);
    }

    [Fact]
    public void Real_overlay_info_names_its_backing_file_and_format()
    {
        var info = QemuImgClient.ParseInfo(Fixture.Read("overlay-with-raw-backing.qemu-img-info.json"));

        Assert.Equal("qcow2", info.Format);
        Assert.Equal("/tmp/qfx/base disk.raw", info.BackingFile);
        Assert.Equal("raw", info.BackingFormat);
    }

    [Fact]
    public void Full_backing_filename_wins_over_a_relative_backing_filename()
    {
        var info = QemuImgClient.ParseInfo("""{"format":"qcow2","virtual-size":1,"actual-size":1,"backing-filename":"base.raw","full-backing-filename":"/x/base.raw","backing-filename-format":"raw"}""");

        Assert.Equal("/x/base.raw", info.BackingFile);
    }

    [Theory]
    [InlineData("")]
    [InlineData("qemu-img: Could not open '/nonexistent': Could not open '/nonexistent': No such file or directory")]
    [InlineData("{\"format\": \"qcow2\",")]
    public void Output_that_is_not_json_is_a_parser_error(string output)
    {
        var ex = Assert.Throws<BackupException>(() => QemuImgClient.ParseInfo(output));

        Assert.Equal(ErrorIds.UnparsableOutput, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.ParserError, ex.Category);
    }

    [Fact]
    public async Task Info_reads_the_header_only_and_shares_the_image_with_a_running_qemu()
    {
        var runner = new FakeRunner(_ => Results.Ok(Fixture.Read("linux_boot.qemu-img-info.json")));

        var info = await new QemuImgClient(runner).InfoAsync("/x/linux boot", CancellationToken.None);

        Assert.Equal("qcow2", info.Format);
        var call = Assert.Single(runner.Calls);
        Assert.Equal("qemu-img", call.Program);
        Assert.Equal(["info", "--output=json", "-U", "/x/linux boot"], call.Args);
    }

    [Fact]
    public async Task Info_of_a_copy_forces_its_format_and_does_not_share_it()
    {
        var runner = new FakeRunner(_ => Results.Ok(Fixture.Read("linux_boot.qemu-img-info.json")));

        await new QemuImgClient(runner).InfoAsync("/backup/vm/run/linux boot", "qcow2", shared: false, CancellationToken.None);
        await new QemuImgClient(runner).InfoAsync("/x/in use", "raw", shared: true, CancellationToken.None);

        Assert.Equal(["info", "--output=json", "-f", "qcow2", "/backup/vm/run/linux boot"], runner.Calls[0].Args);
        Assert.Equal(["info", "--output=json", "-f", "raw", "-U", "/x/in use"], runner.Calls[1].Args);
    }

    [Fact]
    public void An_external_data_file_is_read_from_the_format_specific_part()
    {
        // qemu-img 7.2 of a qcow2 made with -o data_file=/tmp/qi/data.raw
        var info = QemuImgClient.ParseInfo("""
            { "virtual-size": 1048576, "filename": "datafile.qcow2", "cluster-size": 65536, "format": "qcow2", "actual-size": 200704,
              "format-specific": { "type": "qcow2", "data": { "compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16,
                "data-file": "/tmp/qi/data.raw", "data-file-raw": false, "corrupt": false, "extended-l2": false } }, "dirty-flag": false }
            """);
        Assert.Equal("/tmp/qi/data.raw", info.DataFile);
        Assert.Null(info.BackingFile);
        Assert.Null(QemuImgClient.ParseInfo(Fixture.Read("linux_boot.qemu-img-info.json")).DataFile);
    }

    [Theory]
    [InlineData("81a4\n", UnixFileKind.RegularFile)]
    [InlineData("11a4\n", UnixFileKind.Fifo)]
    [InlineData("a1ff\n", UnixFileKind.SymbolicLink)]
    [InlineData("6180\n", UnixFileKind.BlockDevice)]
    [InlineData("21b6\n", UnixFileKind.CharacterDevice)]
    public async Task The_kind_of_a_file_comes_from_stat_without_following_a_link(string stdout, object kind) // object: UnixFileKind is internal
    {
        var runner = new FakeRunner(_ => Results.Ok(stdout));
        Assert.Equal((UnixFileKind)kind, await new QemuImgClient(runner).FileKindAsync("/backup/-x", CancellationToken.None));
        var call = Assert.Single(runner.Calls);
        Assert.Equal("stat", call.Program);
        Assert.Equal(["--format=%f", "--", "/backup/-x"], call.Args);
    }

    [Fact]
    public async Task A_file_that_is_not_there_has_no_kind()
    {
        var runner = new FakeRunner(_ => new ProcessResult(1, "", "stat: cannot statx '/x': No such file or directory\n", TimeSpan.Zero));
        Assert.Null(await new QemuImgClient(runner).FileKindAsync("/x", CancellationToken.None));
    }

    [Fact]
    public async Task An_overlay_on_an_inspected_copy_is_made_without_opening_the_copy()
    {
        var runner = new FakeRunner(_ => Results.Ok(""));
        await new QemuImgClient(runner).CreateOverlayAsync("/state/o.qcow2", "/backup/vm/run/disk", "raw", 67108864, CancellationToken.None);
        Assert.Equal(["create", "-q", "-f", "qcow2", "-b", "/backup/vm/run/disk", "-F", "raw", "-u", "/state/o.qcow2", "67108864"], Assert.Single(runner.Calls).Args);
    }

    [Fact]
    public async Task Failed_qemu_img_names_the_image_and_quotes_its_stderr()
    {
        var runner = new FakeRunner(_ => new ProcessResult(1, "", "qemu-img: Could not open '/nonexistent': Could not open '/nonexistent': No such file or directory\n", TimeSpan.Zero));

        var ex = await Assert.ThrowsAsync<BackupException>(() => new QemuImgClient(runner).InfoAsync("/nonexistent", CancellationToken.None));

        Assert.Equal(ErrorIds.QemuImgFailed, ex.ErrorId);
        Assert.Equal("/nonexistent", ex.Target);
        Assert.Contains("No such file or directory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commit_commits_the_overlay_given()
    {
        var runner = new FakeRunner(_ => Results.Ok("Image committed.\n"));

        await new QemuImgClient(runner).CommitAsync("/x/a.FILE_STAGE_BACKUP.TEMP", CancellationToken.None);

        Assert.Equal(["commit", "/x/a.FILE_STAGE_BACKUP.TEMP"], Assert.Single(runner.Calls).Args);
    }
}
