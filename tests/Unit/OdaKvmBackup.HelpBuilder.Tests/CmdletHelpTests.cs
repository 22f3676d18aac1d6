using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class CmdletHelpTests
{
    [Fact]
    public void Syntax_lists_positional_then_mandatory_then_other_parameters_as_PowerShell_does()
    {
        var set = Fixture.SampleCommand("Set-Widget");
        Assert.Equal(
            "Set-Widget [-Colour] <String> -InputObject <Widget> [-Force] [-WhatIf] [-Confirm] [<CommonParameters>]",
            CmdletHelp.SyntaxLine(set, set.ParameterSets[0]));
    }

    [Fact]
    public void Each_parameter_set_has_its_own_syntax_the_default_first()
    {
        var get = Fixture.SampleCommand("Get-Widget");
        Assert.Equal(
        [
            ("ByName", "Get-Widget [[-Name] <String[]>] [-Kind <String>] [-Limit <Nullable[Int32]>] [-Detailed] [<CommonParameters>]"),
            ("ById", "Get-Widget [[-Kind] <String>] -Id <Int32> [-Limit <Nullable[Int32]>] [-Detailed] [<CommonParameters>]"),
        ], CmdletHelp.Syntax(get));
        Assert.Contains("### ByName (Default)\n\n```\nGet-Widget", CmdletHelp.SyntaxMarkdown(get), StringComparison.Ordinal);
    }

    [Fact]
    public void A_cmdlet_with_one_set_has_one_syntax_block_without_heading()
    {
        var set = Fixture.SampleCommand("Set-Widget");
        Assert.Equal("\n```\n" + CmdletHelp.SyntaxLine(set, set.ParameterSets[0]) + "\n```\n\n", CmdletHelp.SyntaxMarkdown(set));
    }

    [Fact]
    public void A_parameter_that_binds_alike_in_every_set_has_one_yaml_block_for_All()
    {
        var get = Fixture.SampleCommand("Get-Widget");
        var yaml = Assert.Single(CmdletHelp.YamlBlocks(get, get.FindParameter("Limit")!, null));
        Assert.Equal(ParameterYaml.All, yaml[ParameterYaml.ParameterSets]);
        Assert.Equal("Nullable[Int32]", yaml[ParameterYaml.Type]);
        Assert.Equal("None", yaml[ParameterYaml.DefaultValue]);
    }

    [Fact]
    public void A_parameter_that_binds_differently_per_set_has_a_block_per_set()
    {
        var get = Fixture.SampleCommand("Get-Widget");
        var blocks = CmdletHelp.YamlBlocks(get, get.FindParameter("Kind")!, "Round");
        Assert.Equal(["ByName", "ById"], blocks.Select(b => b[ParameterYaml.ParameterSets]));
        Assert.Equal(["Named", "0"], blocks.Select(b => b[ParameterYaml.Position]));
        Assert.All(blocks, b => Assert.Equal("Round, Square", b[ParameterYaml.AcceptedValues]));
        Assert.All(blocks, b => Assert.Equal("Round", b[ParameterYaml.DefaultValue]));
    }

    [Fact]
    public void A_parameter_in_one_set_only_names_that_set()
    {
        var get = Fixture.SampleCommand("Get-Widget");
        var name = Assert.Single(CmdletHelp.YamlBlocks(get, get.FindParameter("Name")!, null));
        Assert.Equal("ByName", name[ParameterYaml.ParameterSets]);
        Assert.Equal("WidgetName", name[ParameterYaml.Aliases]);
        Assert.Equal("True (ByPropertyName, ByValue)", name[ParameterYaml.PipelineInput]);
        Assert.Equal("True", name[ParameterYaml.Wildcards]);
    }

    [Fact]
    public void A_switch_defaults_to_False()
    {
        var set = Fixture.SampleCommand("Set-Widget");
        var force = Assert.Single(CmdletHelp.YamlBlocks(set, set.FindParameter("Force")!, " "));
        Assert.Equal("SwitchParameter", force[ParameterYaml.Type]);
        Assert.Equal("False", force[ParameterYaml.DefaultValue]);
    }
}
